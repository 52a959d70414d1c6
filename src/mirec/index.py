"""faiss index over item vectors: build with a recall gate, multi-interest search with merge.

Every index scores by inner product (the training score) and returns the caller's item ids
(explicit id mapping: ``IndexIDMap2`` around flat and HNSW indexes, IVF stores ids natively).

A query is one user's K interest vectors. ``search_interests`` runs ONE faiss search of the
stacked ``[B*K, D]`` matrix, merges the K lists by max score per item, drops faiss' ``-1``
fillers, removes duplicates and excluded (seen) items and keeps the top k.

Index choice for ``kind="auto"`` (see ``choose_kind``): exact search below
``cfg.exact_below`` items; HNSW up to ``HNSW_MAX_ITEMS`` (2 * 10^6), because its recall holds
up on weakly clustered vectors where IVF needs many more probes (benchmarks/results/index.md);
IVF above, where HNSW's build time (minutes per 10^6 items on 2 cores) and memory (about
twice the vectors) become the cost and IVF builds several times faster.
An ANN index is kept only when its recall@k of the merged list against exact search, on a
sample of real user interest vectors, reaches ``cfg.min_recall``; otherwise the exact index is
returned and ``IndexInfo.fell_back`` is set.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mirec.config import IndexConfig
from mirec.errors import BundleMismatchError

log = logging.getLogger(__name__)

KINDS = ("flat", "hnsw", "ivf")
HNSW_EF_CONSTRUCTION = 64  # build-time beam width of HNSW (faiss default: 40)
HNSW_MAX_ITEMS = 2_000_000  # kind "auto": HNSW up to this many items, IVF above
IVF_TRAIN_PER_LIST = 50  # k-means training points per IVF list (faiss warns below 39)
MAX_RECALL_QUERIES = 1_000  # users sampled for the recall gate
_SEED = 1234


@dataclass(frozen=True)
class IndexInfo:
    """What was built and how good it is.

    Attributes:
        kind: the returned index, "flat" | "hnsw" | "ivf".
        params: its parameters (``m``, ``ef_search``, ``nlist``, ``nprobe``, ...); after a
            fallback, ``fallback_from`` holds the rejected ANN kind, params and recall.
        num_items: N, the number of indexed items.
        dim: D.
        recall_at_k: recall@k of the merged multi-interest list of the returned index
            against exact search (1.0 for exact search; None when an ANN index was built
            without a query sample).
        k: the k of ``recall_at_k``.
        fell_back: True when the ANN index missed the recall gate and exact search is used.
        build_seconds: wall time of the whole build, recall check included.
    """

    kind: str
    params: dict[str, Any]
    num_items: int
    dim: int
    recall_at_k: float | None
    k: int
    fell_back: bool
    build_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (for manifests and KFP metadata)."""
        return asdict(self)


def choose_kind(num_items: int, cfg: IndexConfig) -> str:
    """The index kind for ``num_items`` items: ``cfg.kind``, or the size rule when "auto"."""
    if cfg.kind != "auto":
        return cfg.kind
    if num_items < cfg.exact_below:
        return "flat"
    return "hnsw" if num_items <= HNSW_MAX_ITEMS else "ivf"


def default_nlist(num_items: int) -> int:
    """IVF lists: the power of two nearest 4 * sqrt(N), with >= 39 items per list."""
    target = 2 ** round(math.log2(max(4.0 * math.sqrt(num_items), 1.0)))
    return int(max(1, min(target, num_items // 39)))


def _as_vectors(vecs: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    arr = np.ascontiguousarray(vecs, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] array, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, the index has {dim}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_ids(ids: np.ndarray, num: int) -> np.ndarray:
    arr = np.ascontiguousarray(ids, dtype=np.int64)
    if arr.shape != (num,):
        raise ValueError(f"item_ids must have shape ({num},), got {arr.shape}")
    if (arr < 0).any():
        raise ValueError(f"item_ids must be >= 0 (faiss uses -1 as filler), got {arr.min()}")
    if np.unique(arr).size != num:
        raise ValueError("item_ids contain duplicates")
    return arr


def _as_queries(user_vecs: np.ndarray, dim: int) -> np.ndarray:
    arr = np.ascontiguousarray(user_vecs, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, None, :]  # [B, D] -> [B, 1, D]
    if arr.ndim != 3 or arr.shape[2] != dim:
        raise ValueError(f"user vectors must be [B, K, {dim}], got shape {arr.shape}")
    return arr


def _exact(vecs: np.ndarray, ids: np.ndarray) -> faiss.Index:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vecs.shape[1]))
    index.add_with_ids(vecs, ids)
    return index


def _hnsw(vecs: np.ndarray, ids: np.ndarray, cfg: IndexConfig) -> tuple[faiss.Index, dict]:
    inner = faiss.IndexHNSWFlat(vecs.shape[1], cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    inner.hnsw.efSearch = cfg.hnsw_ef_search
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(vecs, ids)
    params = {
        "m": cfg.hnsw_m,
        "ef_construction": HNSW_EF_CONSTRUCTION,
        "ef_search": cfg.hnsw_ef_search,
    }
    return index, params


def _ivf(vecs: np.ndarray, ids: np.ndarray, cfg: IndexConfig) -> tuple[faiss.Index, dict]:
    num, dim = vecs.shape
    nlist = min(cfg.ivf_nlist or default_nlist(num), num)
    index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    num_train = min(num, IVF_TRAIN_PER_LIST * nlist)
    rows = np.random.default_rng(_SEED).choice(num, size=num_train, replace=False)
    index.train(vecs[np.sort(rows)])
    nprobe = min(cfg.ivf_nprobe, nlist)
    faiss.extract_index_ivf(index).nprobe = nprobe
    index.add_with_ids(vecs, ids)
    return index, {"nlist": nlist, "nprobe": nprobe, "num_train": num_train}


def _recall_sample(query_sample: np.ndarray, dim: int) -> np.ndarray:
    queries = _as_queries(query_sample, dim)
    if queries.shape[0] > MAX_RECALL_QUERIES:
        rows = np.random.default_rng(_SEED).choice(queries.shape[0], MAX_RECALL_QUERIES, False)
        queries = queries[np.sort(rows)]
    return queries


def build_index(
    item_vecs: np.ndarray,
    item_ids: np.ndarray,
    cfg: IndexConfig,
    *,
    query_sample: np.ndarray | None = None,
) -> tuple[faiss.Index, IndexInfo]:
    """Build an inner-product index over item vectors, gated on ANN recall.

    Args:
        item_vecs: [N, D] float32 item-tower output.
        item_ids: [N] int64 ids returned by searches (unique, >= 0).
        cfg: index kind and parameters, the recall gate.
        query_sample: [Q, K, D] real user interest vectors for the recall gate (at most
            ``MAX_RECALL_QUERIES`` users are used); without it an ANN index is not gated.

    Returns:
        The index and an ``IndexInfo`` describing it.

    Raises:
        ValueError: bad shapes, non-finite vectors, negative or duplicate ids.
    """
    start = time.perf_counter()
    vecs = _as_vectors(item_vecs, "item_vecs")
    ids = _as_ids(item_ids, vecs.shape[0])
    num, dim = vecs.shape
    kind = choose_kind(num, cfg)
    if kind == "flat":
        info = IndexInfo("flat", {}, num, dim, 1.0, cfg.recall_k, False, 0.0)
        return _exact(vecs, ids), _timed(info, start)
    index, params = _hnsw(vecs, ids, cfg) if kind == "hnsw" else _ivf(vecs, ids, cfg)
    if query_sample is None:
        log.warning(
            "%s index over %d items built without a query sample: recall not gated", kind, num
        )
        return index, _timed(
            IndexInfo(kind, params, num, dim, None, cfg.recall_k, False, 0.0), start
        )
    exact = _exact(vecs, ids)
    recall = recall_against_exact(index, exact, _recall_sample(query_sample, dim), cfg.recall_k)
    if recall >= cfg.min_recall:
        log.info(
            "%s index %s: recall@%d %.4f >= %.2f",
            kind,
            params,
            cfg.recall_k,
            recall,
            cfg.min_recall,
        )
        return index, _timed(
            IndexInfo(kind, params, num, dim, recall, cfg.recall_k, False, 0.0), start
        )
    log.warning(
        "%s index %s: recall@%d %.4f < min_recall %.2f; falling back to exact search",
        kind,
        params,
        cfg.recall_k,
        recall,
        cfg.min_recall,
    )
    rejected = {"kind": kind, "params": params, "recall_at_k": recall}
    info = IndexInfo("flat", {"fallback_from": rejected}, num, dim, 1.0, cfg.recall_k, True, 0.0)
    return exact, _timed(info, start)


def _timed(info: IndexInfo, start: float) -> IndexInfo:
    seconds = round(time.perf_counter() - start, 4)
    return IndexInfo(**{**asdict(info), "build_seconds": seconds})


def set_search_params(
    index: faiss.Index, *, ef_search: int | None = None, nprobe: int | None = None
) -> None:
    """Change the search-time knob of an HNSW (``ef_search``) or IVF (``nprobe``) index."""
    if ef_search is not None:
        inner = faiss.downcast_index(getattr(index, "index", index))  # inside IDMap2
        if not hasattr(inner, "hnsw"):
            raise ValueError(f"ef_search needs an HNSW index, got {type(inner).__name__}")
        inner.hnsw.efSearch = ef_search
    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe


def _members(row_ids: np.ndarray, seen: Sequence[int]) -> np.ndarray:
    """Mask of ``row_ids`` that are in ``seen`` (broadcast compare when small: np.isin is slow)."""
    seen_ids = np.asarray(seen, dtype=np.int64)
    if row_ids.size * seen_ids.size <= 1 << 16:
        return (row_ids[:, None] == seen_ids[None, :]).any(axis=1)
    return np.isin(row_ids, seen_ids)


def merge_interest_lists(
    ids: np.ndarray,
    scores: np.ndarray,
    k: int,
    exclude: Sequence[Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge each user's candidate lists: max score per id, no -1, no duplicates, no excluded.

    Args:
        ids: [B, M] candidate ids (the K lists of one user side by side; -1 = none).
        scores: [B, M] their scores.
        k: how many to keep per user.
        exclude: per user, ids that must not be returned (e.g. already seen).

    Returns:
        ids [B, k] int64 (-1 pads rows with fewer than k candidates) and scores [B, k]
        float32 (-inf pads), best first.
    """
    batch, width = ids.shape
    if width < k:  # pad so that top-k always exists
        ids = np.pad(ids, ((0, 0), (0, k - width)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, k - width)), constant_values=-np.inf)
    masked = np.where(ids < 0, -np.inf, scores).astype(np.float32, copy=False)  # -1: no result
    if exclude is not None:
        if len(exclude) != batch:
            raise ValueError(f"exclude has {len(exclude)} rows for {batch} users")
        for row, seen in enumerate(exclude):
            if len(seen):
                masked[row, _members(ids[row], seen)] = -np.inf
    order = np.lexsort((-masked, ids), axis=-1)  # per row: by id, then best score first
    ids_sorted = np.take_along_axis(ids, order, axis=1)
    scores_sorted = np.take_along_axis(masked, order, axis=1)
    scores_sorted[:, 1:][ids_sorted[:, 1:] == ids_sorted[:, :-1]] = -np.inf  # lower duplicates
    top = np.argsort(-scores_sorted, axis=1, kind="stable")[:, :k]
    top_ids = np.take_along_axis(ids_sorted, top, axis=1).astype(np.int64)
    top_scores = np.take_along_axis(scores_sorted, top, axis=1)
    top_ids[np.isneginf(top_scores)] = -1
    return top_ids, top_scores


def search_interests(
    index: faiss.Index,
    user_vecs: np.ndarray,
    k: int,
    *,
    exclude: Sequence[Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items per user by max inner product over the user's K interest vectors.

    One faiss search of the stacked ``[B*K, D]`` matrix with ``k + max(len(exclude))``
    results per vector, so excluded items never leave holes, then ``merge_interest_lists``.

    Args:
        index: an index from ``build_index`` / ``load_index``.
        user_vecs: [B, K, D] interest vectors ([B, D] is read as K = 1).
        k: results per user (>= 1).
        exclude: per user, ids not to return (seen items).

    Returns:
        ids [B, k] int64 and scores [B, k] float32, best first; -1 / -inf pad.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries = _as_queries(user_vecs, index.d)
    batch, num_interests, dim = queries.shape
    extra = max((len(seen) for seen in exclude), default=0) if exclude is not None else 0
    per_vector = max(1, min(k + extra, index.ntotal))
    scores, ids = index.search(queries.reshape(batch * num_interests, dim), per_vector)
    width = num_interests * per_vector
    return merge_interest_lists(  # [B*K, k'] -> [B, K*k']
        ids.reshape(batch, width), scores.reshape(batch, width), k, exclude
    )


def recall_against_exact(
    index: faiss.Index, exact_index: faiss.Index, queries: np.ndarray, k: int
) -> float:
    """Mean recall@k of ``index``'s merged lists against ``exact_index``'s merged lists.

    Args:
        index: the index under test.
        exact_index: exact search over the same items.
        queries: [Q, K, D] user interest vectors.
        k: list length.

    Returns:
        The mean over users of |approx top-k ∩ exact top-k| / |exact top-k|.
    """
    approx_ids, _ = search_interests(index, queries, k)
    exact_ids, _ = search_interests(exact_index, queries, k)
    return merged_recall(approx_ids, exact_ids)


def merged_recall(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over rows of |approx ∩ exact| / |exact|, ignoring -1 pads.

    Args:
        approx_ids: [Q, k] ids from the index under test.
        exact_ids: [Q, k] ids from exact search.
    """
    hits = [
        np.intersect1d(a[a >= 0], e[e >= 0]).size / max(int((e >= 0).sum()), 1)
        for a, e in zip(approx_ids, exact_ids, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0


def add_items(index: faiss.Index, vecs: np.ndarray, ids: np.ndarray) -> None:
    """Add new items to an index without retraining (IDMap2 / IVF).

    Args:
        index: an index from ``build_index``.
        vecs: [M, D] item vectors.
        ids: [M] new ids; for id-mapped indexes ids already present are refused.

    Raises:
        ValueError: bad shapes, or ids already in the index.
    """
    arr = _as_vectors(vecs, "vecs", index.d)
    new_ids = _as_ids(ids, arr.shape[0])
    if hasattr(index, "id_map"):
        present = np.intersect1d(faiss.vector_to_array(index.id_map), new_ids)
        if present.size:
            raise ValueError(f"ids already in the index: {present[:10].tolist()}")
    index.add_with_ids(arr, new_ids)


def save_index(index: faiss.Index, path: str | Path) -> Path:
    """Write the index atomically (temp file, then rename); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, out)
    return out


def load_index(path: str | Path) -> faiss.Index:
    """Read an index written by ``save_index``.

    Raises:
        BundleMismatchError: the file is missing, corrupt or not an inner-product index.
    """
    src = Path(path)
    if not src.is_file():
        raise BundleMismatchError(f"index file {src} is missing")
    try:
        index = faiss.read_index(str(src))
    except RuntimeError as exc:
        raise BundleMismatchError(f"index file {src} is corrupt: {exc}") from exc
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise BundleMismatchError(f"index file {src} does not use the inner-product metric")
    return index
