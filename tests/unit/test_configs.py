"""Every shipped config file loads and validates (a typo in a key or a value fails here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirec.config import load

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_configs_are_found() -> None:
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads(path: Path) -> None:
    cfg = load(path)
    assert cfg.model.name and cfg.optim.batch_size >= 1
