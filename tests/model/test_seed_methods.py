"""Seed methods on planted synthetic data: each trains, composes by config and moves what it
targets (repel: interest diversity; RR: routing entropy; clustering: planted user groups)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirec.bundle import ModelBundle
from mirec.config import load
from mirec.data.batches import SeqBatch, pad_left
from mirec.data.synthetic import generate
from mirec.models.intents import intent_centres, user_intents
from mirec.training import train

BASE = [
    "model.dim=16",
    "model.num_interests=4",
    "model.dropout=0.0",
    "optim.lr=0.005",
    "optim.batch_size=128",
    "optim.max_epochs=3",
    "optim.patience=3",
    "optim.num_threads=1",
    "eval.metric=recall@20",
]


@pytest.fixture(scope="module")
def planted():
    return generate(
        num_users=300, num_items=150, num_clusters=5, interests_per_user=(2, 3), mean_len=15, seed=4
    )


def _last(tmp_path, data, overrides: list[str], name: str) -> dict[str, float]:
    result = train(load(None, BASE + overrides), data, tmp_path / name, progress=False)
    return result.history[-1]


def test_everything_composes_and_the_bundle_keeps_the_centres(planted, tmp_path) -> None:
    overrides = [
        "model.name=multi_tower",
        "model.num_layers=1",
        "model.num_intents=4",
        "loss.kind=sampled_softmax_ihn",
        "loss.sampler=uniform",
        "loss.readout=logsumexp",
        "loss.readout_temperature=0.5",
        "loss.auxiliary.repel=0.1",
        "loss.auxiliary.routing=10",
        "loss.auxiliary.clustering=1",
        "loss.auxiliary.contrastive=0.1",
        "loss.intents.warmup_epochs=1",
    ]
    result = train(load(None, BASE + overrides), planted, tmp_path / "all", progress=False)
    last = result.history[-1]
    for key in ("diag/interest_cosine", "diag/routing_entropy", "diag/intents_used"):
        assert np.isfinite(last[key]), key
    assert last["valid/recall@20"] > 0.1
    bundle = ModelBundle.load(result.bundle_dir)
    hist = pad_left([[1, 2, 3], [40, 41]], 50)
    ids = user_intents(bundle.model, SeqBatch(hist, (hist != 0).sum(1), torch.zeros(2).long()))
    assert ids.shape == (2,) and int(ids.max()) < 4


def test_repel_makes_interests_more_diverse(planted, tmp_path) -> None:
    arch = ["model.name=comirec_sa", "loss.kind=full_softmax"]
    plain = _last(tmp_path, planted, arch, "plain")
    repel = _last(tmp_path, planted, [*arch, "loss.auxiliary.repel=1.0"], "repel")
    assert repel["diag/interest_cosine"] < plain["diag/interest_cosine"] - 0.1


def test_routing_regularisation_raises_routing_entropy(planted, tmp_path) -> None:
    arch = ["model.name=comirec_sa", "loss.kind=full_softmax"]
    plain = _last(tmp_path, planted, arch, "plain")
    rr = _last(tmp_path, planted, [*arch, "loss.auxiliary.routing=1000"], "rr")
    assert rr["diag/routing_entropy"] > plain["diag/routing_entropy"]
    assert rr["diag/routing_max_weight"] < plain["diag/routing_max_weight"]


def _planted_groups():
    return generate(
        num_users=400, num_items=150, num_clusters=4, interests_per_user=(1, 1), mean_len=15, seed=5
    )


def _purity(bundle: ModelBundle, data) -> float:
    """The share of users whose intent's majority planted cluster is their own."""
    seqs = data.events.groupby("user_id")["item_id"].apply(list)
    users = list(data.planted["user_clusters"])
    hist = pad_left([bundle.vocab.encode(seqs[u]) for u in users], 50)
    ids = user_intents(
        bundle.model, SeqBatch(hist, (hist != 0).sum(1), torch.zeros(len(users)).long())
    ).numpy()
    planted = np.array([data.planted["user_clusters"][u][0] for u in users])
    return sum(np.bincount(planted[ids == k]).max() for k in set(ids.tolist())) / len(users)


def test_intent_centres_recover_planted_user_groups(tmp_path) -> None:
    """ELCRec with mirec's one-epoch warm-up before the k-means start and the paper's Yelp
    weight 0.1. Measured over training seeds 0, 1, 2: purity .750, .968, .580 (k-means on the
    same trained vectors without the term: .830, .978, .555; at weight 1 no epoch after the
    start beats epoch 0 on validation; docs/methods.md)."""
    data = _planted_groups()
    overrides = [
        "model.name=sasrec",
        "model.num_intents=4",
        "loss.auxiliary.clustering=0.1",
        "loss.intents.warmup_epochs=1",
        "optim.max_epochs=4",
    ]
    result = train(load(None, BASE + overrides), data, tmp_path / "elc", progress=False)
    assert result.best_epoch >= 1  # the kept weights trained with the clustering term
    assert _purity(ModelBundle.load(result.bundle_dir), data) > 0.6  # chance is ~0.25


def test_centres_start_on_the_kept_weights_when_the_warm_up_outlasts_training(tmp_path) -> None:
    data = _planted_groups()
    overrides = [
        "model.name=sasrec",
        "model.num_intents=4",
        "loss.auxiliary.clustering=1",
        "loss.intents.warmup_epochs=5",
        "optim.max_epochs=1",
    ]
    result = train(load(None, BASE + overrides), data, tmp_path / "late", progress=False)
    assert "diag/intents_used" not in result.history[-1]  # never started during training
    centres = intent_centres(ModelBundle.load(result.bundle_dir).model)
    assert centres is not None and centres.ready
