"""Sampled softmax: shared negatives, logQ correction, accidental-hit masking, temperature."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mirec.config import LossConfig
from mirec.errors import ConfigError
from mirec.objectives.base import (
    LossContext,
    NegativeSampler,
    Readout,
    interest_scores,
    positive_scores,
    readout,
)
from mirec.objectives.registry import register_main
from mirec.schema import PAD_ITEM_ID


def shared_negatives(
    targets: torch.Tensor,
    cfg: LossConfig,
    sampler: NegativeSampler | None,
    generator: torch.Generator,
    num_negatives: int,
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """Shared negatives for the batch: (ids [M], log_q [M] or None, is_full_in_batch)."""
    if cfg.sampler == "in_batch":
        ids, full = targets, True
        if targets.shape[0] > num_negatives:
            pick = torch.randperm(targets.shape[0], generator=generator, device=generator.device)[
                :num_negatives
            ]
            ids, full = targets[pick.to(targets.device)], False
        log_q = sampler.log_q(ids) if cfg.logq_correction and sampler is not None else None
        return ids, log_q, full
    if sampler is None:
        raise ConfigError(f"loss.sampler {cfg.sampler!r} needs a negative sampler, got None")
    draw = sampler.draw(num_negatives, generator)
    return draw.ids.to(targets.device), draw.log_q.to(targets.device), False


def negative_mask(
    neg_ids: torch.Tensor, targets: torch.Tensor, cfg: LossConfig, full_in_batch: bool
) -> torch.Tensor:
    """BoolTensor [P, M], True where a shared negative must not count for a row: PAD, the row's
    own target (with ``remove_accidental_hits``) and, for full in-batch negatives, the diagonal."""
    masked = (neg_ids == PAD_ITEM_ID).unsqueeze(0).expand(targets.shape[0], -1)  # [P, M]
    if cfg.remove_accidental_hits:
        masked = masked | (neg_ids.unsqueeze(0) == targets.unsqueeze(1))
    if full_in_batch:  # the row's own positive is its label, not a negative
        masked = masked | torch.eye(targets.shape[0], dtype=torch.bool, device=targets.device)
    return masked


def sampled_softmax_loss(
    queries: torch.Tensor,
    pos_vecs: torch.Tensor,
    neg_vecs: torch.Tensor,
    *,
    pos_log_q: torch.Tensor | None,
    neg_log_q: torch.Tensor | None,
    masked: torch.Tensor | None,
    temperature: float,
    readout_mode: Readout = "max",
    readout_temperature: float = 1.0,
) -> torch.Tensor:
    """Softmax of each row's positive against shared negatives.

    Logits are divided by the temperature, then log q is subtracted from every logit (positives
    included) when given, then masked negatives are set to -inf.

    Args:
        queries: Tensor [P, K', D] from ``readout``.
        pos_vecs: Tensor [P, D], each row's positive item.
        neg_vecs: Tensor [M, D], negatives shared by all rows.
        pos_log_q: Tensor [P] or None.
        neg_log_q: Tensor [M] or None.
        masked: BoolTensor [P, M] or None; True removes that negative from that row.
        temperature: softmax temperature.
        readout_mode, readout_temperature: how K query vectors pool (``interest_scores``).
    """
    queries = queries / temperature if temperature != 1.0 else queries
    pos = positive_scores(queries, pos_vecs, readout_mode, readout_temperature)  # [P]
    neg = interest_scores(queries, neg_vecs, readout_mode, readout_temperature)  # [P, M]
    if pos_log_q is not None and neg_log_q is not None:
        pos = pos - pos_log_q
        neg = neg - neg_log_q.unsqueeze(0)
    if masked is not None:
        neg = neg.masked_fill(masked, float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)  # [P, 1 + M]
    return F.cross_entropy(logits, torch.zeros_like(pos, dtype=torch.long))


@register_main("sampled_softmax")
def sampled_softmax_objective(ctx: LossContext) -> torch.Tensor:
    """``loss.kind: sampled_softmax``: each row's target against shared sampled negatives."""
    model, targets, cfg, sampler = ctx.model, ctx.targets, ctx.cfg, ctx.sampler
    user_vecs, generator, num_negatives = ctx.user_vecs, ctx.generator, ctx.num_negatives
    if cfg.logq_correction and sampler is None:
        raise ConfigError("loss.logq_correction is true but no sampler gives log q")
    neg_ids, neg_log_q, full_in_batch = shared_negatives(
        targets, cfg, sampler, generator, num_negatives
    )
    pos_vecs = model.item_tower(targets)  # [P, D]
    queries = readout(user_vecs, pos_vecs, cfg.readout)
    masked = negative_mask(neg_ids, targets, cfg, full_in_batch)  # [P, M]
    pos_log_q = None
    if cfg.logq_correction and sampler is not None:
        pos_log_q = sampler.log_q(targets).to(pos_vecs.dtype)
    return sampled_softmax_loss(
        queries,
        pos_vecs,
        model.item_tower(neg_ids),
        pos_log_q=pos_log_q,
        neg_log_q=None if neg_log_q is None else neg_log_q.to(pos_vecs.dtype),
        masked=masked,
        temperature=cfg.temperature,
        readout_mode=cfg.readout,
        readout_temperature=cfg.readout_temperature,
    )
