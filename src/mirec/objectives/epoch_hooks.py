"""What the training loop calls around each epoch for the seed methods.

``before_epoch`` starts ELCRec's intent centres: once ``loss.intents.warmup_epochs`` epochs have
trained, the centres are set to the spherical k-means centres of every training user's
behaviour vector (a no-op for models without centres and once set; the flag is in the state
dict, so a resumed run does not redo it); ``start_centres`` does the same on the kept weights
when the best epoch predates that start. ``epoch_diagnostics`` measures, on up to
``DIAGNOSTIC_USERS`` validation users, what the methods are meant to change: interest diversity
(mean pairwise cosine of a user's K vectors), routing collapse (entropy and max weight of the
routing rows) and how users spread over the intents.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from mirec.config import TrainConfig
from mirec.data.batches import SeqBatch, pad_left
from mirec.data.splits import Split
from mirec.models.intents import behaviour_vectors, intent_centres
from mirec.models.two_tower import TwoTower
from mirec.objectives.repel import interest_cosines
from mirec.objectives.routing import routing_collapse

log = logging.getLogger(__name__)
DIAGNOSTIC_USERS = 2048
BATCH = 512


def _history_batches(
    histories: list[np.ndarray], max_len: int, device: torch.device
) -> Iterator[SeqBatch]:
    """Left-padded histories in batches of ``BATCH``, on the model's ``device``."""
    for lo in range(0, len(histories), BATCH):
        hist = pad_left(histories[lo : lo + BATCH], max_len).to(device)
        yield SeqBatch(hist, (hist != 0).sum(1), torch.zeros_like(hist[:, 0]))


def _device(model: TwoTower) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def before_epoch(model: TwoTower, cfg: TrainConfig, split: Split, epoch: int) -> None:
    """Initialise the intent centres by k-means when their warm-up has just ended."""
    if epoch >= cfg.loss.intents.warmup_epochs:
        start_centres(model, cfg, split, f"at epoch {epoch}")


@torch.no_grad()
def start_centres(model: TwoTower, cfg: TrainConfig, split: Split, when: str) -> None:
    """Set unset intent centres to the k-means centres of the training users' behaviour vectors.

    A no-op without centres or once they are set. The loop also calls it on the kept weights
    after training: when the best epoch came before the warm-up ended, the exported centres
    still group users (by the kept model's vectors) instead of being unset.
    """
    centres = intent_centres(model)
    if centres is None or centres.ready:
        return
    was_training = model.training
    model.eval()
    vecs = [
        behaviour_vectors(model.user_vectors(b))
        for b in _history_batches(list(split.train.sequences), split.max_len, _device(model))
    ]
    model.train(was_training)
    centres.initialise(torch.cat(vecs), torch.Generator().manual_seed(cfg.seed))
    log.info("intent centres: k-means over %d training users %s", len(split.train.sequences), when)


@torch.no_grad()
def epoch_diagnostics(model: TwoTower, cfg: TrainConfig, split: Split) -> dict[str, float]:
    """``diag/*`` values of the model on the first validation users (empty for K = 1 without
    centres): ``interest_cosine``, ``routing_entropy``, ``routing_entropy_ratio``,
    ``routing_max_weight``, ``intents_used`` and ``largest_intent_share``."""
    centres = intent_centres(model)
    if model.num_interests == 1 and centres is None:
        return {}
    was_training = model.training
    model.eval()
    histories = list(split.valid.histories[:DIAGNOSTIC_USERS])
    cosines, routing, intents = [], [], []
    for batch in _history_batches(histories, split.max_len, _device(model)):
        vecs = model.user_vectors(batch)
        if vecs.shape[1] > 1:
            cosines.append(interest_cosines(vecs).mean(1))
        rows = getattr(model.user_tower, "routing", None)
        if isinstance(rows, torch.Tensor):
            stats = routing_collapse(rows, batch.mask)
            routing.append((stats, int((batch.mask.sum(1) >= 2).sum())))
        if centres is not None and centres.ready:
            intents.append(centres.assign(behaviour_vectors(vecs)))
    model.train(was_training)
    return _summarise(cosines, routing, intents)


def _summarise(
    cosines: list[torch.Tensor],
    routing: list[tuple[dict[str, float], int]],
    intents: list[torch.Tensor],
) -> dict[str, float]:
    out: dict[str, float] = {}
    if cosines:
        out["diag/interest_cosine"] = float(torch.cat(cosines).mean())
    weight = sum(n for _, n in routing)
    if weight:
        for key in routing[0][0]:
            total = sum(s[key] * n for s, n in routing if n)
            out[f"diag/{key}"] = total / weight
    if intents:
        counts = torch.bincount(torch.cat(intents))
        out["diag/intents_used"] = float((counts > 0).sum())
        out["diag/largest_intent_share"] = float(counts.max() / counts.sum())
    return out
