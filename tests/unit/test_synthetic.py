"""Synthetic data: determinism, planted structure, speed and the chunked event generator."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mirec.data.events import TS_DTYPE, Dataset, read_events_parquet
from mirec.data.synthetic import generate, generate_events, write_synthetic_events
from mirec.errors import ConfigError
from mirec.schema import EVENT_TS, ITEM_ATTRIBUTES, ITEM_ID, SEQ_POS, USER_ATTRIBUTES, USER_ID


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = generate(300, 100, 5, seed=1), generate(300, 100, 5, seed=1), generate(300, 100, 5)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.users, b.users)
    assert not a.events[ITEM_ID].equals(c.events[ITEM_ID])


def test_default_size_is_fast_and_long_tailed() -> None:
    start = time.perf_counter()
    ds = generate()
    seconds = time.perf_counter() - start
    assert seconds < 1.0, f"generate() took {seconds:.2f} s"
    lengths = ds.events.groupby(USER_ID).size()
    assert len(lengths) == 2000 and lengths.min() >= 5
    assert 15 <= lengths.mean() <= 25 and lengths.max() > 4 * lengths.median()
    assert ds.events[EVENT_TS].dtype == TS_DTYPE
    assert ds.events[SEQ_POS].tolist() == list(range(len(ds.events)))
    assert ds.report.rows_read == ds.report.rows_kept == len(ds.events)
    per_user = ds.events.groupby(USER_ID)[EVENT_TS]
    assert per_user.apply(lambda t: t.is_monotonic_increasing).all()


def test_planted_structure(tiny_dataset: Dataset) -> None:
    ds = tiny_dataset
    assert ds.planted is not None
    item_cluster = ds.planted["item_cluster"]
    user_clusters = ds.planted["user_clusters"]
    assert item_cluster[0] == -1 and len(item_cluster) == 121
    assert all(1 <= len(c) <= 3 for c in user_clusters.values())
    clusters = item_cluster[ds.events[ITEM_ID].astype(int).to_numpy()]
    inside = [c in user_clusters[u] for u, c in zip(ds.events[USER_ID], clusters, strict=True)]
    assert np.mean(inside) > 0.9  # ~5% noise
    attrs = ds.items.set_index(ITEM_ID)[ITEM_ATTRIBUTES]
    assert all(attrs[str(i)][0] == f"cluster={item_cluster[i]}" for i in range(1, 121))
    segment = [p[0] for p in ds.users[USER_ATTRIBUTES]]
    first = [f"segment=s{user_clusters[u][0]}" for u in ds.users[USER_ID]]
    assert np.mean(np.array(segment) == np.array(first)) > 0.7


def test_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError):
        generate(num_users=10, num_items=3, num_clusters=5)
    with pytest.raises(ConfigError):
        generate(num_users=10, interests_per_user=(2, 1))


def test_generate_events_is_long_tailed_and_matches_the_parquet_writer(tmp_path: Path) -> None:
    ev = generate_events(200_000, seed=3, chunk_rows=70_000)
    assert len(ev) == 200_000 and ev[EVENT_TS].dtype == TS_DTYPE
    lengths = ev.groupby(USER_ID).size()
    assert 6 <= lengths.mean() <= 12 and lengths.max() > 100 * lengths.median()
    assert ev[SEQ_POS].tolist() == list(range(200_000))
    out = write_synthetic_events(tmp_path / "ev", 200_000, seed=3, chunk_rows=70_000)
    assert sorted(p.name for p in out.iterdir())[0] == "part-00000.parquet"
    assert len(list(out.iterdir())) == 3
    back = read_events_parquet(out).sort_values(SEQ_POS).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, ev, check_dtype=False)
    assert generate_events(0).empty
