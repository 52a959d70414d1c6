"""ELCRec's intent-assisted contrastive learning (ICL, Liu et al., NeurIPS 2024, eqs. 4-7).

Two augmented views of every training row's history (``mirec.objectives.augment``) go through
the user tower; z1, z2 are their behaviour vectors (mean over the K interests).

- L_seq_cl = NT-Xent(z1 (+ c_nearest(z1)), z2 (+ c_nearest(z2))): with ``loss.intents.fusion:
  shift`` each view is first shifted by its nearest centre, as ELCRec does on Beauty.
- L_intent_cl = (NT-Xent(z1, c_u) + NT-Xent(z2, c_u)) / 2, c_u the centre of the un-augmented
  history (ICLRec's PCLoss); rows of the same intent are not each other's negatives.

L_icl = L_seq_cl + L_intent_cl, weight ``loss.auxiliary.contrastive``. Without intent centres, or
before their k-means start, only L_seq_cl (unfused) runs: CL4SRec's sequence contrast. NT-Xent
uses cosine similarities over ``loss.intents.temperature`` (ELCRec: dot products at 1.0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mirec.data.batches import SeqBatch
from mirec.models.intents import IntentCentres, behaviour_vectors, intent_centres
from mirec.models.two_tower import TwoTower
from mirec.objectives.augment import augment
from mirec.objectives.base import LossContext
from mirec.objectives.registry import register_auxiliary
from mirec.schema import PAD_ITEM_ID


def nt_xent(
    a: torch.Tensor, b: torch.Tensor, temperature: float, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric NT-Xent over 2B vectors: a_i and b_i are positives, every other vector a negative.

    Args:
        a, b: Tensor [B, D] (cosine similarity).
        temperature: similarities are divided by it.
        groups: optional LongTensor [B]; pairs (i, j != i) of the same group are not negatives.

    Returns:
        Scalar, the mean cross-entropy of the 2B rows.
    """
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]), dim=-1)  # [2B, D]
    sims = z @ z.T / temperature  # [2B, 2B]
    idx = torch.arange(2 * n, device=z.device)
    partner = (idx + n) % (2 * n)
    drop = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    if groups is not None:
        g = torch.cat([groups, groups])
        drop = drop | (
            (g.unsqueeze(0) == g.unsqueeze(1)) & (partner.unsqueeze(0) != idx.unsqueeze(1))
        )
    return F.cross_entropy(sims.masked_fill(drop, float("-inf")), partner)


def _views(model: TwoTower, batch: SeqBatch, ctx: LossContext) -> tuple[torch.Tensor, ...]:
    """Behaviour vectors of two augmented views of ``batch``, [B, D] each."""
    out = []
    for _ in range(2):
        hist = augment(batch.hist_item_ids, ctx.cfg.intents, ctx.generator)
        view = SeqBatch(hist, (hist != PAD_ITEM_ID).sum(1), batch.target_item_ids)
        out.append(behaviour_vectors(model.user_vectors(view)))
    return tuple(out)


def _original_intents(ctx: LossContext, rows: SeqBatch, centres: IntentCentres) -> torch.Tensor:
    """Intent ids of the un-augmented histories of ``rows``, [B]."""
    if not ctx.model.causal:  # training_rows already scored exactly these rows
        return centres.assign(behaviour_vectors(ctx.user_vecs.detach()))
    with torch.no_grad():
        return centres.assign(behaviour_vectors(ctx.model.user_vectors(rows)))


def _shift(z: torch.Tensor, centres: IntentCentres) -> torch.Tensor:
    """z plus its nearest unit centre (ELCRec's ``shift`` fusion), on unit vectors."""
    return F.normalize(z, dim=-1) + centres.normalised()[centres.assign(z)]


@register_auxiliary("contrastive")
def contrastive_objective(ctx: LossContext) -> torch.Tensor:
    """``loss.auxiliary.contrastive``: L_seq_cl + L_intent_cl on the batch's training rows."""
    batch, cfg = ctx.batch, ctx.cfg.intents
    valid = batch.target_item_ids != PAD_ITEM_ID
    rows = SeqBatch(batch.hist_item_ids[valid], batch.hist_len[valid], batch.target_item_ids[valid])
    if rows.hist_item_ids.shape[0] < 2:
        return ctx.user_vecs.sum() * 0.0
    z1, z2 = _views(ctx.model, rows, ctx)
    centres = intent_centres(ctx.model)
    if centres is None or not centres.ready:
        return nt_xent(z1, z2, cfg.temperature)
    if cfg.fusion == "shift":
        seq = nt_xent(_shift(z1, centres), _shift(z2, centres), cfg.temperature)
    else:
        seq = nt_xent(z1, z2, cfg.temperature)
    ids = _original_intents(ctx, rows, centres)
    target = centres.normalised()[ids]  # [B, D]
    intent = (
        nt_xent(z1, target, cfg.temperature, ids) + nt_xent(z2, target, cfg.temperature, ids)
    ) / 2
    return seq + intent
