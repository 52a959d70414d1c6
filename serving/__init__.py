"""BentoML services over ``mirec.serving`` (adapters: nothing in ``src/mirec`` imports them)."""
