"""Ranking metrics against hand-computed values and a brute-force reference; rank_topk masking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mirec.metrics import (
    compute_metrics,
    compute_per_user_metrics,
    hit_at_k,
    ndcg_at_k,
    rank_topk,
    recall_at_k,
)

TOPK = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
TARGETS = [np.array([2, 9]), np.array([10]), np.array([12, 9, 11])]


def test_hand_computed_values() -> None:
    # user 0: hit at rank 2 of 2 targets; user 1: no hit; user 2: hits at ranks 1, 3, 4 of 3.
    assert hit_at_k(TOPK, TARGETS, 4) == pytest.approx(2 / 3)
    assert recall_at_k(TOPK, TARGETS, 4) == pytest.approx((1 / 2 + 0 + 1) / 3)
    d = [1 / math.log2(r + 1) for r in range(1, 5)]  # discounts of ranks 1..4
    standard = [d[1] / (d[0] + d[1]), 0.0, (d[0] + d[2] + d[3]) / (d[0] + d[1] + d[2])]
    comirec = [d[1] / d[0], 0.0, (d[0] + d[2] + d[3]) / (d[0] + d[1] + d[2])]
    assert ndcg_at_k(TOPK, TARGETS, 4) == pytest.approx(np.mean(standard))
    assert ndcg_at_k(TOPK, TARGETS, 4, "comirec") == pytest.approx(np.mean(comirec))
    # k smaller than the list: only the first item counts; IDCG over min(#targets, k) = 1.
    assert recall_at_k(TOPK, TARGETS, 1) == pytest.approx((0 + 0 + 1 / 3) / 3)
    assert ndcg_at_k(TOPK, TARGETS, 1) == pytest.approx(1 / 3)


def test_duplicate_targets_count_once_and_empty_targets_score_zero() -> None:
    topk = np.array([[3, 1], [1, 2]])
    targets = [np.array([3, 3]), np.array([], dtype=np.int64)]
    assert recall_at_k(topk, targets, 2) == pytest.approx(0.5)
    assert ndcg_at_k(topk, targets, 2) == pytest.approx(0.5)
    assert hit_at_k(topk, targets, 2) == pytest.approx(0.5)


def _reference(topk: np.ndarray, targets: list[np.ndarray], k: int) -> dict[str, float]:
    hr, rec, ndcg, ndcg_c = [], [], [], []
    for ranked, t in zip(topk, targets, strict=True):
        truth = set(t.tolist())
        hits = [i for i, item in enumerate(ranked[:k]) if item in truth]
        dcg = sum(1 / math.log2(i + 2) for i in hits)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(len(truth), k)))
        idcg_c = sum(1 / math.log2(i + 2) for i in range(len(hits)))
        hr.append(float(bool(hits)))
        rec.append(len(hits) / len(truth))
        ndcg.append(dcg / idcg)
        ndcg_c.append(dcg / idcg_c if hits else 0.0)
    return {
        "hr": np.mean(hr),
        "recall": np.mean(rec),
        "ndcg": np.mean(ndcg),
        "ndcg_c": np.mean(ndcg_c),
    }


def test_against_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(0)
    users, items = 300, 60
    topk = np.stack([rng.permutation(np.arange(1, items + 1))[:20] for _ in range(users)])
    targets = [rng.choice(np.arange(1, items + 1), size=rng.integers(1, 12)) for _ in range(users)]
    for k in (1, 5, 10, 20):
        ref = _reference(topk, targets, k)
        got = compute_metrics(topk, targets, (k,))
        assert got[f"hr@{k}"] == pytest.approx(ref["hr"])
        assert got[f"recall@{k}"] == pytest.approx(ref["recall"])
        assert got[f"ndcg@{k}"] == pytest.approx(ref["ndcg"])
        assert ndcg_at_k(topk, targets, k, "comirec") == pytest.approx(ref["ndcg_c"])


def test_per_user_values_average_to_the_metrics() -> None:
    per_user = compute_per_user_metrics(TOPK, TARGETS, (1, 4), "comirec")
    assert per_user["hr@4"].tolist() == [1.0, 0.0, 1.0]
    assert per_user["recall@1"].tolist() == pytest.approx([0.0, 0.0, 1 / 3])
    means = compute_metrics(TOPK, TARGETS, (1, 4), "comirec")
    assert {key: float(v.mean()) for key, v in per_user.items()} == pytest.approx(means)


def test_compute_metrics_keys() -> None:
    keys = set(compute_metrics(TOPK, TARGETS, (2, 4)))
    assert keys == {"hr@2", "recall@2", "ndcg@2", "hr@4", "recall@4", "ndcg@4"}


def test_rank_topk_masks_pad_and_history_but_never_a_target() -> None:
    scores = torch.tensor([[9.0, 5.0, 4.0, 3.0, 2.0, 1.0], [9.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    exclude = [np.array([1, 2]), np.array([1, 2, 99])]  # 99 is outside the catalogue: ignored
    targets = [np.array([2]), np.array([5])]
    original = scores.clone()
    top = rank_topk(scores, exclude, targets, 3, "-inf")
    assert top.tolist() == [[2, 3, 4], [3, 4, 5]]  # row 0 keeps target 2 although it is history
    assert torch.equal(scores, original)  # input untouched


def test_rank_topk_zero_mode_lets_history_outrank_negative_scores() -> None:
    scores = torch.tensor([[0.0, 3.0, -1.0, -2.0, 0.5]])
    top = rank_topk(scores, [np.array([1])], [np.array([3])], 4, "zero")
    assert top.tolist() == [[4, 1, 2, 3]]  # item 1 scored 0.0: below 0.5, above -1
    top = rank_topk(scores, [np.array([1])], [np.array([3])], 3, "-inf")
    assert top.tolist() == [[4, 2, 3]]


def test_rank_topk_rejects_unknown_history_mode() -> None:
    with pytest.raises(ValueError, match="history_score"):
        rank_topk(torch.zeros(1, 3), [np.array([1])], [np.array([2])], 2, "nan")  # type: ignore[arg-type]
