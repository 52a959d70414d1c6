"""Training objectives: ``compute_loss`` runs the configured main loss and auxiliary terms.

Each objective is a small module that registers itself (``mirec.objectives.registry``):
the main losses are ``full_softmax``, ``sampled_softmax`` and REMI's ``sampled_softmax_ihn`` and
``full_softmax_ihn`` (``ihn``); the auxiliary terms are ``repel`` (interest repel), ``routing``
(REMI's routing regularisation), ``clustering`` (ELCRec's centre loss) and ``contrastive``
(ELCRec's intent-assisted contrastive learning). Their weights are ``loss.auxiliary``; see
docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mirec.config import LossConfig
from mirec.data.batches import SeqBatch
from mirec.models.two_tower import TwoTower
from mirec.objectives import clustering as clustering
from mirec.objectives import contrastive as contrastive
from mirec.objectives import full_softmax as full_softmax
from mirec.objectives import ihn as ihn
from mirec.objectives import repel as repel
from mirec.objectives import routing as routing
from mirec.objectives import sampled_softmax as sampled_softmax
from mirec.objectives.base import (
    LossContext,
    LossOutput,
    NegativeSampler,
    Readout,
    readout,
    training_rows,
)
from mirec.objectives.full_softmax import full_softmax_loss, resolve_matmul_dtype
from mirec.objectives.registry import auxiliary_objective, main_objective
from mirec.objectives.sampled_softmax import sampled_softmax_loss

__all__ = [
    "LossContext",
    "LossOutput",
    "NegativeSampler",
    "Readout",
    "compute_loss",
    "full_softmax_loss",
    "readout",
    "resolve_matmul_dtype",
    "sampled_softmax_loss",
    "training_rows",
]


def compute_loss(
    model: TwoTower,
    batch: SeqBatch,
    cfg: LossConfig,
    sampler: NegativeSampler | None,
    generator: torch.Generator,
    num_negatives: int,
    auxiliary: Mapping[str, float] | None = None,
) -> LossOutput:
    """The training loss of one batch: the main loss plus weighted auxiliary terms.

    Args:
        model: the two towers.
        batch: histories and targets (``pos_targets`` for all-position training of causal
            models).
        cfg: loss settings (kind, sampler, logQ, accidental hits, readout, temperature).
        sampler: negative sampler for ``sampled_softmax`` (also the log q source for in-batch
            negatives); may be None for ``full_softmax``.
        generator: RNG for negatives.
        num_negatives: shared negatives per batch (the cap for in-batch negatives).
        auxiliary: auxiliary term name -> weight (terms with weight 0 are skipped); None
            takes ``cfg.auxiliary``.

    Returns:
        LossOutput with ``parts = {cfg.kind: main, <term>: term, ...}`` (unweighted parts). A
        batch without any real target gives a zero loss that still backpropagates.

    Raises:
        ConfigError: an unknown loss or term, or a sampled loss without the sampler it needs.
    """
    main = main_objective(cfg.kind)
    user_vecs, targets = training_rows(model, batch)  # [P, K, D], [P]
    if targets.numel() == 0:
        zero = user_vecs.sum() * 0.0
        return LossOutput(total=zero, parts={cfg.kind: zero.detach()})
    ctx = LossContext(model, batch, cfg, sampler, generator, num_negatives, user_vecs, targets)
    total = main(ctx)
    parts: dict[str, torch.Tensor] = {cfg.kind: total.detach()}
    weights = cfg.auxiliary.model_dump() if auxiliary is None else auxiliary
    for name, weight in weights.items():
        if weight == 0:
            continue
        term = auxiliary_objective(name)(ctx)
        parts[name] = term.detach()
        total = total + weight * term
    return LossOutput(total=total, parts=parts)
