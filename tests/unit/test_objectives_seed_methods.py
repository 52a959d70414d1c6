"""Seed-method objectives against hand-computed values at toy size."""

from __future__ import annotations

import math

import pytest
import torch

from mirec.errors import ConfigError
from mirec.models.intents import spherical_kmeans
from mirec.objectives.augment import crop, mask_items, reorder
from mirec.objectives.base import interest_scores, positive_scores
from mirec.objectives.clustering import clustering_loss
from mirec.objectives.contrastive import nt_xent
from mirec.objectives.full_softmax import full_softmax_loss
from mirec.objectives.ihn import full_ihn_loss, ihn_loss
from mirec.objectives.repel import repel_loss
from mirec.objectives.routing import routing_collapse, routing_regularisation

torch.set_num_threads(1)


def test_logsumexp_readout_by_hand_and_tends_to_max() -> None:
    q = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # [1, K=2, D=2]
    item = torch.tensor([[1.0, 1.0]])  # scores 1 and 2
    expected = 0.5 * math.log(math.exp(1 / 0.5) + math.exp(2 / 0.5))
    assert interest_scores(q, item, "logsumexp", 0.5).item() == pytest.approx(expected)
    assert positive_scores(q, item, "logsumexp", 0.5).item() == pytest.approx(expected)
    assert interest_scores(q, item, "logsumexp", 1e-3).item() == pytest.approx(2.0, abs=1e-2)
    assert interest_scores(q, item, "max").item() == pytest.approx(2.0)


def test_repel_by_hand() -> None:
    # cos(v1, v2) = 0.6, cos(v1, v3) = 0, cos(v2, v3) = 0.8
    v = torch.tensor([[[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 1.0, 0.0]]])
    assert repel_loss(v, 0.0).item() == pytest.approx((0.36 + 0.0 + 0.64) / 3)
    assert repel_loss(v, 0.7).item() == pytest.approx((0.1**2) / 3)
    with pytest.raises(ConfigError, match="K >= 2"):
        repel_loss(v[:, :1], 0.0)


def test_ihn_by_hand_and_beta_zero_is_sampled_softmax() -> None:
    q = torch.tensor([[[1.0, 0.0]]])
    pos = torch.tensor([[2.0, 0.0]])  # s+ = 2
    neg = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # s = 1, 0, -1
    beta = 2.0
    s = torch.tensor([1.0, 0.0, -1.0])
    w = torch.exp(beta * s) / torch.exp(beta * s).mean()
    ng = float((w * torch.exp(s)).sum())
    expected = -math.log(math.exp(2) / (math.exp(2) + ng))
    got = ihn_loss(q, pos, neg, beta=beta, neg_log_q=None, masked=None)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    plain = -math.log(math.exp(2) / (math.exp(2) + float(torch.exp(s).sum())))
    assert ihn_loss(q, pos, neg, beta=0.0, neg_log_q=None, masked=None).item() == pytest.approx(
        plain, rel=1e-5
    )
    # a masked negative is dropped: M' = 2 and the mass is over the other two
    masked = torch.tensor([[False, True, False]])
    s2 = torch.tensor([1.0, -1.0])
    w2 = torch.exp(beta * s2) / torch.exp(beta * s2).mean()
    exp2 = -math.log(math.exp(2) / (math.exp(2) + float((w2 * torch.exp(s2)).sum())))
    got2 = ihn_loss(q, pos, neg, beta=beta, neg_log_q=None, masked=masked)
    assert got2.item() == pytest.approx(exp2, rel=1e-5)
    # a uniform proposal's log q is a constant and changes nothing
    log_q = torch.full((3,), -math.log(10))
    assert ihn_loss(q, pos, neg, beta=beta, neg_log_q=log_q, masked=None).item() == pytest.approx(
        expected, rel=1e-5
    )


def test_full_ihn_by_hand_and_beta_zero_is_full_softmax() -> None:
    # row 0 of item_vecs is PAD; items 1..4 score 2, 1, 0, -1 under the one query; target = item 1
    q = torch.tensor([[[1.0, 0.0]]])
    items = torch.tensor([[9.0, 9.0], [2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    target = torch.tensor([1])
    beta = 2.0
    s = torch.tensor([1.0, 0.0, -1.0])  # the three negatives; PAD never competes
    w = torch.exp(beta * s) / torch.exp(beta * s).mean()
    expected = -math.log(math.exp(2) / (math.exp(2) + float((w * torch.exp(s)).sum())))
    got = full_ihn_loss(q, items, target, beta=beta)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # beta = 0 is the full-softmax cross-entropy, K = 4 interests with the max readout included
    torch.manual_seed(0)
    qk, vecs, tk = torch.randn(5, 4, 8), torch.randn(30, 8), torch.randint(1, 30, (5,))
    plain = full_softmax_loss(qk, vecs, tk, 1.0)
    assert full_ihn_loss(qk, vecs, tk, beta=0.0).item() == pytest.approx(plain.item(), rel=1e-5)
    # a harder tilt weighs the high-scoring negatives more: the loss rises
    assert full_ihn_loss(qk, vecs, tk, beta=1.0).item() > plain.item()


def test_routing_regularisation_by_hand_with_padding_masked() -> None:
    # one user, K=1, 3 positions of which the first is padding; real row (0.75, 0.25)
    routing = torch.tensor([[[0.0, 0.75, 0.25]]])
    mask = torch.tensor([[False, True, True]])
    var = ((0.75 - 0.5) ** 2 + (0.25 - 0.5) ** 2) / 2  # 0.0625
    assert routing_regularisation(routing, mask).item() == pytest.approx(var**2)
    stats = routing_collapse(routing, mask)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert stats["routing_entropy"] == pytest.approx(entropy)
    assert stats["routing_entropy_ratio"] == pytest.approx(entropy / math.log(2))
    assert stats["routing_max_weight"] == pytest.approx(0.75)


def test_clustering_loss_by_hand() -> None:
    c = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised: e1, e2; ||e1 - e2||^2 = 2
    h = torch.tensor([[5.0, 0.0]])  # normalised e1: distances 0 and 2
    separation = (2 + 2) / (2 * 1)
    alignment = (0 + 2) / (1 * 2)
    assert clustering_loss(h, c).item() == pytest.approx(alignment - separation)


def test_nt_xent_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # row a1: sims to a2, b1, b2 = 0, 1, 0 over t; positive b1
    row = -math.log(math.exp(2) / (math.exp(0) + math.exp(2) + math.exp(0)))
    assert nt_xent(a, b, t).item() == pytest.approx(row, rel=1e-5)
    # same group: the other pair is not a negative, only the positive is left
    assert nt_xent(a, b, t, torch.tensor([0, 0])).item() == pytest.approx(0.0, abs=1e-6)


def test_augmentations_keep_left_padding_and_items() -> None:
    g = torch.Generator().manual_seed(0)
    hist = torch.tensor([[0, 0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 0, 9]])
    c = crop(hist, 0.4, g)
    assert c[0, -2:].tolist() in ([1, 2], [2, 3], [3, 4], [4, 5]) and (c[0, :-2] == 0).all()
    assert c[1].tolist() == [0, 0, 0, 0, 0, 0, 9]
    m = mask_items(hist, 0.7, g)
    assert (m[0] != 0).sum() == 2 and set(m[0][m[0] != 0].tolist()) <= {1, 2, 3, 4, 5}
    assert m[1].tolist() == hist[1].tolist()  # one item: nothing is masked
    r = reorder(hist, 1.0, g)
    assert sorted(r[0, 2:].tolist()) == [1, 2, 3, 4, 5] and (r[0, :2] == 0).all()


def test_spherical_kmeans_recovers_two_directions() -> None:
    g = torch.Generator().manual_seed(0)
    pts = torch.cat(
        [
            torch.tensor([1.0, 0.0]) + 0.05 * torch.randn(20, 2, generator=g),
            torch.tensor([0.0, 1.0]) + 0.05 * torch.randn(20, 2, generator=g),
        ]
    )
    centres = spherical_kmeans(pts, 2, g)
    best = (centres @ torch.eye(2)).max(dim=0).values
    assert (best > 0.99).all()
