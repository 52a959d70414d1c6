"""``python -m mirec.cli``: the ``mirec`` command (benchmarks run their children this way)."""

from mirec.cli import main

raise SystemExit(main())
