"""REMI's interest-aware hard negatives (IHN, Xie et al., RecSys 2023): ``sampled_softmax_ihn``.

The ideal negatives of a row are the base distribution tilted towards the items its interests
score highly, q_beta(i) ~ exp(beta s_i) p(i), beta = ``loss.ihn_beta`` (0 = no tilt). With M
shared negatives drawn from the sampler's Q, the negative mass is the Monte-Carlo estimate

    Ng = sum_j w_j exp(s_j),   w_j = M' softmax_j(beta s_j - log Q_j)

over the row's M' unmasked negatives (self-normalised importance weights: REMI's
w_j = exp(beta s_j) / mean_k exp(beta s_k) for a uniform Q, with the 1/Q_j correction that
``docs/methods.md`` derives for any other sampler when ``loss.logq_correction`` is on), and

    L = -log(exp(s+) / (exp(s+) + Ng)).

The weights carry no gradient, as if the negatives had been drawn from q_beta. Scores s are the
readout's (``max`` over interests as serving does, ``logsumexp`` or REMI's ``target_aware``)
divided by ``loss.temperature``; masked negatives (PAD, accidental hits) get weight 0.

``full_softmax_ihn`` is the same tilt over the whole catalogue instead of a sample: every real
item but the row's target is a negative, Q is uniform, so w_j = (N - 1) softmax_j(beta s_j) and
beta = 0 is exactly the full-softmax cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mirec.errors import ConfigError
from mirec.objectives.base import LossContext, Readout, interest_scores, positive_scores, readout
from mirec.objectives.registry import register_main
from mirec.objectives.sampled_softmax import negative_mask, shared_negatives
from mirec.schema import PAD_ITEM_ID


def ihn_loss(
    queries: torch.Tensor,
    pos_vecs: torch.Tensor,
    neg_vecs: torch.Tensor,
    *,
    beta: float,
    neg_log_q: torch.Tensor | None,
    masked: torch.Tensor | None,
    temperature: float = 1.0,
    readout_mode: Readout = "max",
    readout_temperature: float = 1.0,
) -> torch.Tensor:
    """The IHN loss, mean over rows.

    Args:
        queries: Tensor [P, K', D] from ``readout``.
        pos_vecs: Tensor [P, D]; neg_vecs: Tensor [M, D] shared by all rows.
        beta: hardness of the tilt (>= 0).
        neg_log_q: Tensor [M], log Q of each negative, or None for no proposal correction.
        masked: BoolTensor [P, M] or None; True drops that negative from that row.
        temperature: scores are divided by it.
        readout_mode, readout_temperature: how K' query vectors pool (``interest_scores``).

    Returns:
        Scalar; a row without any unmasked negative contributes 0.
    """
    queries = queries / temperature if temperature != 1.0 else queries
    pos = positive_scores(queries, pos_vecs, readout_mode, readout_temperature)  # [P]
    neg = interest_scores(queries, neg_vecs, readout_mode, readout_temperature)  # [P, M]
    if masked is None:
        masked = torch.zeros_like(neg, dtype=torch.bool)
    tilt = beta * neg.detach()
    if neg_log_q is not None:
        tilt = tilt - neg_log_q.unsqueeze(0)
    tilt = tilt.masked_fill(masked, float("-inf"))
    count = (~masked).sum(dim=1, keepdim=True).clamp(min=1)  # [P, 1]
    log_w = (F.log_softmax(tilt, dim=1) + count.log()).masked_fill(masked, float("-inf"))
    log_neg_mass = torch.logsumexp(log_w + neg, dim=1)  # [P], -inf without negatives
    return (torch.logaddexp(pos, log_neg_mass) - pos).mean()


@register_main("sampled_softmax_ihn")
def ihn_objective(ctx: LossContext) -> torch.Tensor:
    """``loss.kind: sampled_softmax_ihn``: sampled softmax with REMI's tilted negative weights."""
    model, targets, cfg, sampler = ctx.model, ctx.targets, ctx.cfg, ctx.sampler
    if cfg.logq_correction and sampler is None:
        raise ConfigError("loss.logq_correction is true but no sampler gives log q")
    neg_ids, neg_log_q, full_in_batch = shared_negatives(
        targets, cfg, sampler, ctx.generator, ctx.num_negatives
    )
    pos_vecs = model.item_tower(targets)  # [P, D]
    return ihn_loss(
        readout(ctx.user_vecs, pos_vecs, cfg.readout),
        pos_vecs,
        model.item_tower(neg_ids),
        beta=cfg.ihn_beta,
        neg_log_q=neg_log_q.to(pos_vecs.dtype)
        if cfg.logq_correction and neg_log_q is not None
        else None,
        masked=negative_mask(neg_ids, targets, cfg, full_in_batch),
        temperature=cfg.temperature,
        readout_mode=cfg.readout,
        readout_temperature=cfg.readout_temperature,
    )


def full_ihn_loss(
    queries: torch.Tensor,
    item_vecs: torch.Tensor,
    targets: torch.Tensor,
    *,
    beta: float,
    temperature: float = 1.0,
    readout_mode: Readout = "max",
    readout_temperature: float = 1.0,
) -> torch.Tensor:
    """The IHN loss with every real item but the target as a negative, mean over rows.

    Args:
        queries: Tensor [P, K', D] from ``readout``.
        item_vecs: Tensor [N+1, D], row 0 = PAD (never a negative).
        targets: LongTensor [P] in 1..N.
        beta: hardness of the tilt (>= 0); 0 gives the plain full-softmax cross-entropy.
        temperature, readout_mode, readout_temperature: as ``ihn_loss``.

    Returns:
        Scalar.
    """
    queries = queries / temperature if temperature != 1.0 else queries
    items = item_vecs[PAD_ITEM_ID + 1 :]  # [N, D]
    scores = interest_scores(queries, items, readout_mode, readout_temperature)  # [P, N]
    rows = torch.arange(scores.shape[0], device=scores.device)
    labels = targets - (PAD_ITEM_ID + 1)
    pos = scores[rows, labels]  # [P]
    is_target = torch.zeros_like(scores, dtype=torch.bool)
    is_target[rows, labels] = True
    tilt = (beta * scores.detach()).masked_fill(is_target, float("-inf"))
    count = scores.new_tensor(float(max(scores.shape[1] - 1, 1)))
    log_w = F.log_softmax(tilt, dim=1) + count.log()  # -inf at the target
    log_neg_mass = torch.logsumexp(log_w + scores, dim=1)  # [P]
    return (torch.logaddexp(pos, log_neg_mass) - pos).mean()


@register_main("full_softmax_ihn")
def full_ihn_objective(ctx: LossContext) -> torch.Tensor:
    """``loss.kind: full_softmax_ihn``: the full softmax with REMI's tilted negative weights."""
    cfg = ctx.cfg
    item_vecs = ctx.model.item_vectors()  # [N+1, D]
    return full_ihn_loss(
        readout(ctx.user_vecs, item_vecs[ctx.targets], cfg.readout),
        item_vecs,
        ctx.targets,
        beta=cfg.ihn_beta,
        temperature=cfg.temperature,
        readout_mode=cfg.readout,
        readout_temperature=cfg.readout_temperature,
    )
