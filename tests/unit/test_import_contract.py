"""The core never imports an edge framework (pyspark, feast, great_expectations, kfp, bentoml)."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "mirec.training",
    "mirec.objectives",
    "mirec.evaluate",
    "mirec.bundle",
    "mirec.index",
    "mirec.data.loaders",
    "mirec.cli",
]
EDGES = ["pyspark", "feast", "great_expectations", "kfp", "bentoml"]


def test_core_imports_no_edge() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + f"bad = [e for e in {EDGES!r} if e in sys.modules]\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported edge packages: {out.stdout.strip()}"


def test_cli_help_does_not_import_edges() -> None:
    code = (
        "import sys\nfrom mirec.cli import build_parser\nbuild_parser()\n"
        + f"print(','.join(e for e in {EDGES!r} if e in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
