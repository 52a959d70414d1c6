"""Evaluation of a model on another model's split: its own input width and its own vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirec.bundle import ModelBundle
from mirec.config import EvalConfig, load
from mirec.data.splits import EvalData, Split, UserSequences, split_leave_one_out
from mirec.data.vocab import Vocabulary
from mirec.errors import ConfigError
from mirec.evaluate import evaluate_bundle, evaluate_scorer
from mirec.models import build_model

torch.set_num_threads(1)
OLD_ITEMS, NEW_ITEMS = 30, 36  # the challenger's vocabulary appends 6 items to production's
EVAL = EvalConfig(ks=(5, 10, 20))  # cut-offs below the catalogue size


def _bundle(max_len: int, num_items: int, seed: int) -> ModelBundle:
    """An untrained but real SASRec bundle built for ``max_len`` and ``num_items`` items."""
    cfg = load(
        None,
        [f"data.max_len={max_len}", "model.dim=8", "model.num_layers=1", "model.num_heads=1"],
    )
    torch.manual_seed(seed)
    model = build_model(cfg.model, num_items, None, max_len)
    vocab = Vocabulary.build([f"i{k:02d}" for k in range(1, num_items + 1)])
    return ModelBundle(model=model.eval(), config=cfg, vocab=vocab)


def _users(num_users: int = 12) -> list[np.ndarray]:
    """Sequences of 40 events over the new vocabulary; every third user ends on a new item."""
    rng = np.random.default_rng(0)
    seqs = []
    for u in range(num_users):
        seq = rng.integers(1, OLD_ITEMS + 1, size=40)
        seq[-6:-3] = OLD_ITEMS + 1 + u % 6  # recent items the old vocabulary lacks
        if u % 3 == 0:
            seq[-1] = NEW_ITEMS  # an unknown target: a miss for the old model
        seqs.append(seq.astype(np.int64))
    return seqs


def _split(sequences: list[np.ndarray], max_len: int) -> Split:
    users = np.asarray([str(u) for u in range(len(sequences))], dtype=object)
    stamps = [np.arange(len(s), dtype=np.int64) for s in sequences]
    return split_leave_one_out(UserSequences(users, sequences, stamps), NEW_ITEMS, max_len)


def _cut(data: EvalData, num_items: int, width: int) -> EvalData:
    """What the old model may see by hand: its known items, the last ``width`` of them."""
    histories = [h[h <= num_items][-width:] for h in data.histories]
    exclude = [np.unique(h[h <= num_items]) for h in data.histories]
    exclude = [e[~np.isin(e, t)] for e, t in zip(exclude, data.targets, strict=True)]
    return EvalData(data.user_ids, histories, data.targets, exclude)


def test_production_is_scored_with_its_own_width_on_the_challengers_users() -> None:
    production, challenger = _bundle(20, OLD_ITEMS, seed=1), _bundle(50, NEW_ITEMS, seed=2)
    split = _split(_users(), max_len=challenger.config.data.max_len)
    theirs = evaluate_bundle(production, split, EVAL)  # width 50 split, model built for 20
    ours = evaluate_bundle(challenger, split, EVAL)
    assert theirs["num_users"] == ours["num_users"] == 12
    assert theirs["unknown_target_share"] == pytest.approx(4 / 12)
    assert "unknown_target_share" not in ours
    by_hand = evaluate_scorer(production.model, _cut(split.test, OLD_ITEMS, 20), EVAL, 20)
    for key in ("recall@5", "recall@20", "ndcg@10", "hr@20"):
        assert theirs[key] == pytest.approx(by_hand[key])
    assert theirs["recall@20"] <= 8 / 12  # the four unknown targets are misses


def test_the_old_path_crashed_and_a_wider_split_now_does_not_matter() -> None:
    narrow = _bundle(5, NEW_ITEMS, seed=3)
    split = _split(_users(), max_len=50)
    with pytest.raises(ConfigError, match="exceeds the model.s max_len 5"):
        evaluate_scorer(narrow.model, split.test, EVAL, split.max_len)
    metrics = evaluate_bundle(narrow, split, EVAL)
    same = evaluate_bundle(narrow, _split(_users(), max_len=5), EVAL)
    assert metrics == same  # only the model's own width matters, not the split's


def test_a_catalogue_smaller_than_the_largest_cutoff_ranks_every_item() -> None:
    """36 items and ks up to 50: the top list holds all 37 columns and @50 equals @all."""
    split = _split(_users(), max_len=20)
    bundle = _bundle(max_len=20, num_items=NEW_ITEMS, seed=0)
    metrics = evaluate_scorer(bundle.model, split.test, EvalConfig(ks=(5, 50)), max_len=20)
    assert metrics["hr@50"] == pytest.approx(1.0)  # every target is somewhere in the catalogue
    assert metrics["hr@5"] <= metrics["hr@50"]
