"""``bench_quality.with_more_seeds``: adding seeds to a results row keeps every run's own record."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench_quality() -> ModuleType:
    """The script is not a package: load it by path."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_quality", BENCH / "bench_quality.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def _run(seed: int, recall: float, commit: str = "abc") -> dict:
    timings = {"train_seconds": 10.0, "wall_seconds": 12.0, "examples_per_second": 100.0}
    return {"metrics": {"recall@50": recall}, "seed": seed, "commit": commit, **timings,
            "peak_rss_mb": 500.0}  # fmt: skip


def test_new_seeds_join_a_one_seed_row() -> None:
    bench = _bench_quality()
    row = bench.with_more_seeds(_run(0, 0.18, "old"), [_run(1, 0.20), _run(2, 0.16)])
    assert row["seeds"] == [0, 1, 2]
    assert row["metrics"]["recall@50"] == pytest.approx(0.18)
    assert row["std"]["recall@50"] == pytest.approx((0.0008 / 3) ** 0.5)
    assert [r["commit"] for r in row["runs"]] == ["old", "abc", "abc"]


def test_a_rerun_seed_replaces_the_old_run_of_that_seed() -> None:
    bench = _bench_quality()
    old = bench.over_seeds([_run(0, 0.10), _run(1, 0.30)])
    row = bench.with_more_seeds(old, [_run(1, 0.20)])
    assert row["seeds"] == [0, 1]
    assert row["metrics"]["recall@50"] == pytest.approx(0.15)


def test_without_an_old_row_one_run_is_the_row() -> None:
    bench = _bench_quality()
    assert bench.with_more_seeds(None, [_run(3, 0.2)])["seed"] == 3
