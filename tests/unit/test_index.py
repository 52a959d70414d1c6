"""mirec.index: exact search, merge by max, ANN recall gate and fallback, save/load, add items."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from mirec.config import IndexConfig
from mirec.errors import BundleMismatchError
from mirec.index import (
    add_items,
    build_index,
    choose_kind,
    default_nlist,
    load_index,
    merge_interest_lists,
    recall_against_exact,
    save_index,
    search_interests,
    set_search_params,
)

DIM = 16


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(num: int, centres: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors around random centres, and 40 users x K=4 interest vectors near them."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, DIM))
    items = means[rng.integers(centres, size=num)] + 0.3 * rng.standard_normal((num, DIM))
    users = means[rng.integers(centres, size=(40, 4))] + 0.3 * rng.standard_normal((40, 4, DIM))
    return _normalise(items), _normalise(users)


def _brute_force(items: np.ndarray, ids: np.ndarray, users: np.ndarray, k: int, seen=None):
    scores = np.einsum("bkd,nd->bkn", users, items).max(axis=1)  # [B, N] max over interests
    if seen is not None:
        for row, excl in enumerate(seen):
            scores[row, np.isin(ids, excl)] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    return ids[top], np.take_along_axis(scores, top, axis=1)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items, users = _clustered(4000, 40)
    ids = np.arange(4000, dtype=np.int64) * 3 + 7  # ids unrelated to row positions
    return items, ids, users


def test_exact_search_equals_numpy_brute_force(data) -> None:
    items, ids, users = data
    index, info = build_index(items, ids, IndexConfig(kind="flat"))
    got_ids, got_scores = search_interests(index, users, 20)
    want_ids, want_scores = _brute_force(items, ids, users, 20)
    assert info.kind == "flat" and info.num_items == 4000 and info.dim == DIM
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)


def test_exclusions_leave_no_holes(data) -> None:
    items, ids, users = data
    index, _ = build_index(items, ids, IndexConfig(kind="flat"))
    first, _ = search_interests(index, users[:3], 10)
    seen = [first[0][:5].tolist(), [], first[2].tolist() + [999_999]]  # 999999: not indexed
    got_ids, _ = search_interests(index, users[:3], 10, exclude=seen)
    want_ids, _ = _brute_force(items, ids, users[:3], 10, seen)
    np.testing.assert_array_equal(got_ids, want_ids)
    assert (got_ids >= 0).all()
    assert not set(seen[2]) & set(got_ids[2].tolist())


def test_merge_by_max_hand_example() -> None:
    # one user, K=2 lists of 4: item 3 and 5 appear in both, -1 is a faiss filler, 9 is seen
    ids = np.array([[5, 3, -1, 7, 3, 9, 5, 2]])
    scores = np.array([[0.9, 0.8, -3.4e38, 0.1, 0.95, 0.5, 0.2, 0.3]], dtype=np.float32)
    got_ids, got_scores = merge_interest_lists(ids, scores, 3, exclude=[[9]])
    np.testing.assert_array_equal(got_ids, [[3, 5, 2]])
    np.testing.assert_allclose(got_scores, [[0.95, 0.9, 0.3]])
    # asking for more than exist pads with -1 / -inf
    got_ids, got_scores = merge_interest_lists(ids, scores, 7, exclude=[[9]])
    np.testing.assert_array_equal(got_ids, [[3, 5, 2, 7, -1, -1, -1]])
    assert np.isneginf(got_scores[0, 4:]).all()


def test_small_index_pads_when_k_exceeds_items() -> None:
    items, users = _clustered(6, 2)
    index, _ = build_index(items, np.arange(6) + 1, IndexConfig(kind="flat"))
    got_ids, got_scores = search_interests(index, users[:2], 10, exclude=[[1], []])
    assert got_ids.shape == (2, 10)
    assert sorted(got_ids[0][:5].tolist()) == [2, 3, 4, 5, 6] and (got_ids[0][5:] == -1).all()
    assert sorted(got_ids[1][:6].tolist()) == [1, 2, 3, 4, 5, 6] and (got_ids[1][6:] == -1).all()
    assert np.isneginf(got_scores[1, 6:]).all()


@pytest.mark.parametrize(
    "cfg",
    [
        IndexConfig(kind="hnsw", hnsw_m=16, hnsw_ef_search=64),
        IndexConfig(kind="ivf", ivf_nlist=32, ivf_nprobe=8),
    ],
)
def test_ann_on_clustered_set_passes_recall_gate(data, cfg: IndexConfig) -> None:
    items, ids, users = data
    index, info = build_index(items, ids, cfg, query_sample=users)
    assert info.kind == cfg.kind and not info.fell_back
    assert info.recall_at_k is not None and info.recall_at_k >= cfg.min_recall
    assert info.build_seconds > 0
    exact, _ = build_index(items, ids, IndexConfig(kind="flat"))
    assert recall_against_exact(index, exact, users, 50) == pytest.approx(info.recall_at_k)


@pytest.mark.parametrize(
    "cfg",
    [
        IndexConfig(kind="hnsw", hnsw_m=4, hnsw_ef_search=1, min_recall=0.99),
        IndexConfig(kind="ivf", ivf_nlist=64, ivf_nprobe=1, min_recall=0.99),
    ],
)
def test_failed_recall_gate_falls_back_to_exact(data, cfg: IndexConfig, caplog) -> None:
    items, ids, users = data
    index, info = build_index(items, ids, cfg, query_sample=users)
    rejected = info.params["fallback_from"]
    assert info.fell_back and info.kind == "flat" and info.recall_at_k == 1.0
    assert rejected["kind"] == cfg.kind and rejected["recall_at_k"] < cfg.min_recall
    assert "falling back to exact search" in caplog.text
    assert json.loads(json.dumps(info.to_dict()))["params"]["fallback_from"]["kind"] == cfg.kind
    got_ids, _ = search_interests(index, users, 10)
    np.testing.assert_array_equal(got_ids, _brute_force(items, ids, users, 10)[0])


def test_impossible_gate_always_falls_back(data) -> None:
    items, ids, users = data
    fields = {**IndexConfig().model_dump(), "kind": "ivf", "ivf_nlist": 16, "min_recall": 1.01}
    cfg = IndexConfig.model_construct(**fields)  # bypasses the <= 1 validation on purpose
    _, info = build_index(items, ids, cfg, query_sample=users)
    assert info.fell_back and info.kind == "flat"


def test_auto_kind_follows_catalogue_size() -> None:
    cfg = IndexConfig(exact_below=100_000)
    assert choose_kind(99_999, cfg) == "flat"
    assert choose_kind(100_000, cfg) == "hnsw"
    assert choose_kind(1_000_000, cfg) == "hnsw"
    assert choose_kind(5_000_000, cfg) == "ivf"
    assert choose_kind(10, IndexConfig(kind="ivf")) == "ivf"
    assert default_nlist(1_000_000) == 4096 and default_nlist(100_000) == 1024
    assert default_nlist(100) == 2


def test_ann_without_query_sample_is_not_gated(data) -> None:
    items, ids, _ = data
    _, info = build_index(items, ids, IndexConfig(kind="hnsw", hnsw_m=8))
    assert info.kind == "hnsw" and info.recall_at_k is None and not info.fell_back


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip_and_add_items(data, kind: str, tmp_path: Path) -> None:
    items, ids, users = data
    cfg = IndexConfig(kind=kind, hnsw_m=8, hnsw_ef_search=48, ivf_nlist=16, ivf_nprobe=16)
    index, _ = build_index(items[:3000], ids[:3000], cfg)
    path = save_index(index, tmp_path / "sub" / "index.faiss")
    loaded = load_index(path)
    before = search_interests(index, users, 10)
    after = search_interests(loaded, users, 10)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1])
    add_items(loaded, items[3000:], ids[3000:])  # new items join without retraining
    assert loaded.ntotal == 4000
    got, _ = search_interests(loaded, items[3990:][:, None, :], 1)
    np.testing.assert_array_equal(got[:, 0], ids[3990:])


def test_add_items_refuses_known_ids(data) -> None:
    items, ids, _ = data
    index, _ = build_index(items[:100], ids[:100], IndexConfig(kind="flat"))
    with pytest.raises(ValueError, match="already in the index"):
        add_items(index, items[:2], ids[:2])


def test_set_search_params(data) -> None:
    items, ids, _ = data
    hnsw, _ = build_index(items[:500], ids[:500], IndexConfig(kind="hnsw", hnsw_m=8))
    set_search_params(hnsw, ef_search=99)
    assert faiss.downcast_index(hnsw.index).hnsw.efSearch == 99
    ivf, _ = build_index(items[:500], ids[:500], IndexConfig(kind="ivf", ivf_nlist=8))
    set_search_params(ivf, nprobe=3)
    assert faiss.extract_index_ivf(ivf).nprobe == 3


def test_missing_corrupt_or_l2_index_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleMismatchError, match="missing"):
        load_index(tmp_path / "nope.faiss")
    bad = tmp_path / "bad.faiss"
    bad.write_bytes(b"not a faiss index" * 10)
    with pytest.raises(BundleMismatchError, match="corrupt"):
        load_index(bad)
    items, _ = _clustered(50, 2)
    good = save_index(build_index(items, np.arange(50), IndexConfig(kind="flat"))[0], bad)
    truncated = tmp_path / "truncated.faiss"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(BundleMismatchError, match="corrupt"):
        load_index(truncated)
    l2 = faiss.IndexFlatL2(DIM)
    l2.add(items)
    faiss.write_index(l2, str(tmp_path / "l2.faiss"))
    with pytest.raises(BundleMismatchError, match="inner-product"):
        load_index(tmp_path / "l2.faiss")


@pytest.mark.parametrize(
    ("vecs", "ids", "match"),
    [
        (np.zeros((3, DIM)), np.array([1, 1, 2]), "duplicates"),
        (np.zeros((3, DIM)), np.array([1, -2, 3]), ">= 0"),
        (np.zeros((3, DIM)), np.array([1, 2]), "shape"),
        (np.full((2, DIM), np.nan), np.array([1, 2]), "NaN"),
        (np.zeros((0, DIM)), np.zeros(0), "non-empty"),
    ],
)
def test_bad_input_is_refused(vecs: np.ndarray, ids: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_index(vecs, ids, IndexConfig(kind="flat"))
