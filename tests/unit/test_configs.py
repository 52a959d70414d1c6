"""Every shipped config file loads and validates (a typo in a key or a value fails here)."""

from __future__ import annotations

import importlib.util
import sys
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


def _ablation_rows() -> dict[str, tuple[str, tuple[str, ...]]]:
    """``benchmarks/bench_ablation.py``'s rows (the script is not a package: load it by path)."""
    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("bench_ablation", bench / "bench_ablation.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench))
    return dict(module.ROWS)


@pytest.mark.parametrize("key", list(_ablation_rows()))
def test_ablation_row_overrides_validate(key: str) -> None:
    rows = _ablation_rows()
    cfg = load(
        Path(__file__).resolve().parents[2] / "configs" / "beauty_mimt_full.yaml", rows[key][1]
    )
    keys = list(rows)
    # each row keeps every override of the row before it (the ablation is cumulative) ...
    if keys.index(key) > keys.index("repel"):
        before = rows[keys[keys.index(key) - 1]][1]
        assert set(before) <= set(rows[key][1])
    # ... and the rows that name a term switch it on
    on = {
        "ihn": cfg.loss.kind == "full_softmax_ihn",
        "rr": cfg.loss.auxiliary.routing > 0,
        "clustering": cfg.loss.auxiliary.clustering > 0 and cfg.model.num_intents >= 2,
        "contrastive": cfg.loss.auxiliary.contrastive > 0,
        "repel": cfg.loss.auxiliary.repel > 0,
        "max": cfg.loss.readout == "max",
        "head": cfg.model.num_interests > 1,
        "base": cfg.model.num_interests == 1,
    }
    assert on[key]
