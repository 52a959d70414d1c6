"""Ranking metrics (HR, Recall, NDCG at k) as pure functions on ranked item ids, and ranking.

Conventions: ``topk`` is int [U, >=k] with each row's items best first; ``targets[u]`` holds
user u's target item ids (duplicates count once). Every user counts in the mean, also one that
has no target (it scores 0). Keys of ``compute_metrics`` are ``"hr@10"``, ``"recall@10"``,
``"ndcg@10"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from mirec.errors import ConfigError
from mirec.schema import PAD_ITEM_ID

NdcgVariant = Literal["standard", "comirec"]
HistoryScore = Literal["-inf", "zero"]


def _unique_targets(targets: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.unique(np.asarray(t, dtype=np.int64)) for t in targets]


def hit_matrix(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Which of the first k ranked items are targets.

    Args:
        topk: int [U, >=k], ranked item ids.
        targets: U arrays of target ids.
        k: cut-off.

    Returns:
        bool [U, k'] with k' = min(k, topk.shape[1]).

    Raises:
        ConfigError: ``topk`` and ``targets`` disagree on the number of users.
    """
    topk = np.asarray(topk)
    if topk.ndim != 2 or topk.shape[0] != len(targets):
        raise ConfigError(f"topk has shape {topk.shape} but there are {len(targets)} target lists")
    ranked = topk[:, :k].astype(np.int64)
    uniq = _unique_targets(targets)
    lengths = np.fromiter((len(t) for t in uniq), dtype=np.int64, count=len(uniq))
    users = np.repeat(np.arange(len(uniq)), lengths)
    flat = np.concatenate(uniq) if len(uniq) else np.zeros(0, np.int64)
    # A ranked item is a hit when (user, item) is among the (user, target) pairs.
    width = int(max(ranked.max(initial=0), flat.max(initial=0))) + 1
    target_keys = users * width + flat
    ranked_keys = np.arange(len(uniq))[:, None] * width + ranked
    return np.isin(ranked_keys, target_keys)


def _num_targets(targets: Sequence[np.ndarray]) -> np.ndarray:
    return np.fromiter((len(t) for t in _unique_targets(targets)), np.int64, count=len(targets))


def _hr(hits: np.ndarray, num_targets: np.ndarray, variant: NdcgVariant) -> np.ndarray:
    return np.asarray(hits.any(axis=1), dtype=np.float64)


def _recall(hits: np.ndarray, num_targets: np.ndarray, variant: NdcgVariant) -> np.ndarray:
    found = hits.sum(axis=1)
    return np.asarray(np.where(num_targets > 0, found / np.maximum(num_targets, 1), 0.0))


def _ndcg(hits: np.ndarray, num_targets: np.ndarray, variant: NdcgVariant) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))  # [k]
    dcg = hits.astype(np.float64) @ discounts  # [U]
    cum = np.concatenate([[0.0], np.cumsum(discounts)])  # cum[n] = IDCG of n relevant items
    if variant == "standard":
        ideal = np.minimum(num_targets, hits.shape[1])
    elif variant == "comirec":
        ideal = hits.sum(axis=1)
    else:
        raise ConfigError(f"ndcg variant {variant!r} is not 'standard' or 'comirec'")
    idcg = cum[ideal]
    return np.asarray(np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0))


# metric name -> per-user value from (hits bool [U, k], #targets int [U], ndcg variant): float [U]
METRICS: dict[str, Callable[[np.ndarray, np.ndarray, NdcgVariant], np.ndarray]] = {
    "hr": _hr,
    "recall": _recall,
    "ndcg": _ndcg,
}


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


def hit_at_k(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> float:
    """Share of users with at least one target in their top k (HR@k)."""
    return _mean(_hr(hit_matrix(topk, targets, k), _num_targets(targets), "standard"))


def recall_at_k(topk: np.ndarray, targets: Sequence[np.ndarray], k: int) -> float:
    """Mean over users of (targets in the top k) / (number of targets)."""
    return _mean(_recall(hit_matrix(topk, targets, k), _num_targets(targets), "standard"))


def ndcg_at_k(
    topk: np.ndarray, targets: Sequence[np.ndarray], k: int, variant: NdcgVariant = "standard"
) -> float:
    """Mean NDCG@k with binary gains.

    DCG = sum over ranks r = 1..k of hit_r / log2(r + 1). ``standard``: IDCG over
    min(#targets, k) ranks. ``comirec`` (THUDM/ComiRec master): IDCG over #hits in the top k,
    and users with no hit score 0, so it is 1 whenever all hits lead the list.
    """
    return _mean(_ndcg(hit_matrix(topk, targets, k), _num_targets(targets), variant))


def compute_per_user_metrics(
    topk: np.ndarray,
    targets: Sequence[np.ndarray],
    ks: Sequence[int] = (5, 10, 20, 50),
    ndcg_variant: NdcgVariant = "standard",
) -> dict[str, np.ndarray]:
    """Per-user values (float [U]) of every metric at every k, keyed like ``compute_metrics``.

    Average any subset of users (a slice) to get that slice's metric.
    """
    if not ks:
        return {}
    hits = hit_matrix(topk, targets, max(ks))  # [U, max k]
    num_targets = _num_targets(targets)
    return {
        f"{name}@{k}": fn(hits[:, :k], num_targets, ndcg_variant)
        for k in ks
        for name, fn in METRICS.items()
    }


def compute_metrics(
    topk: np.ndarray,
    targets: Sequence[np.ndarray],
    ks: Sequence[int] = (5, 10, 20, 50),
    ndcg_variant: NdcgVariant = "standard",
) -> dict[str, float]:
    """HR, Recall and NDCG at every k, keyed ``"hr@k"``, ``"recall@k"``, ``"ndcg@k"``."""
    per_user = compute_per_user_metrics(topk, targets, ks, ndcg_variant)
    return {key: _mean(values) for key, values in per_user.items()}


def _pairs(rows: Sequence[np.ndarray], num_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) index arrays of every id in ``rows`` that is a real item column."""
    arrays = [np.asarray(r, dtype=np.int64).ravel() for r in rows]
    lengths = np.fromiter((len(a) for a in arrays), np.int64, count=len(arrays))
    r = np.repeat(np.arange(len(arrays)), lengths)
    c = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    keep = (c > PAD_ITEM_ID) & (c < num_cols)
    return r[keep], c[keep]


def rank_topk(
    scores: torch.Tensor,
    exclude: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    k: int,
    history_score: HistoryScore = "-inf",
) -> np.ndarray:
    """Top-k item ids per row after masking PAD and the excluded (history) items.

    Excluded items get -inf (``"-inf"``) or exactly 0.0 (``"zero"``, what the ICLRec/ELCRec
    reference code does; such items can still outrank negative scores). An excluded item that is
    also one of the row's targets is never masked. Ids outside 1..N are ignored.

    Args:
        scores: Tensor [B, N+1] (not modified).
        exclude: B arrays of item ids to mask per row.
        targets: B arrays of target ids per row.
        k: how many to return (at most N+1).
        history_score: ``"-inf"`` or ``"zero"``.

    Returns:
        int64 [B, min(k, N+1)], best first.

    Raises:
        ConfigError: unknown ``history_score``.
    """
    if history_score not in ("-inf", "zero"):
        raise ConfigError(f"eval.history_score {history_score!r} is not '-inf' or 'zero'")
    scores = scores.detach().clone()
    num_cols = scores.shape[1]
    scores[:, PAD_ITEM_ID] = float("-inf")
    rows, cols = _pairs(exclude, num_cols)
    if len(rows):
        t_rows, t_cols = _pairs(targets, num_cols)
        is_target = np.isin(rows * num_cols + cols, t_rows * num_cols + t_cols)
        rows, cols = rows[~is_target], cols[~is_target]
        fill = float("-inf") if history_score == "-inf" else 0.0
        scores[
            torch.from_numpy(rows).to(scores.device), torch.from_numpy(cols).to(scores.device)
        ] = fill
    top = torch.topk(scores, min(k, num_cols), dim=1).indices
    return top.cpu().numpy().astype(np.int64)
