"""REMI's routing regularisation (RR, Xie et al., RecSys 2023) and routing-collapse diagnostics.

A multi-interest extractor routes each history item to the K interests with a matrix A [K, T]
(rows = interests, each a distribution over the history positions). Routing collapse is a row
that puts all its weight on one item. RR penalises the variance of every row:

    C = (A - mean_t A) M (A - mean_t A)^T / n,    L_RR = mean over users of ||diag(C)||_2^2

where M masks the padded positions and n is the number of real positions. REMI's code averages
over all positions including padding, divides by the hidden size and sums over the batch; here
padding is masked, the normaliser is n and users are averaged, so REMI's lambda = 100 at batch
128 and T = 20 corresponds to a weight of about 100 * 128 * (20 / 64)^2 = 1,250.
"""

from __future__ import annotations

import math

import torch

from mirec.errors import ConfigError
from mirec.models.two_tower import TwoTower
from mirec.objectives.base import LossContext
from mirec.objectives.registry import register_auxiliary
from mirec.schema import PAD_ITEM_ID


def last_routing(model: TwoTower) -> torch.Tensor:
    """The user tower's routing matrix from its last forward, [B, K, T].

    Raises:
        ConfigError: the tower exposes no routing matrix (SASRec).
    """
    routing = getattr(model.user_tower, "routing", None)
    if not isinstance(routing, torch.Tensor):
        raise ConfigError(
            f"{type(model.user_tower).__name__} exposes no routing matrix; routing needs "
            "comirec_sa, comirec_dr, mind or multi_tower"
        )
    return routing


def routing_variance(routing: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """diag(C): each row's variance over the real positions, [B, K, T] x [B, T] -> [B, K]."""
    keep = mask.unsqueeze(1).to(routing.dtype)  # [B, 1, T]
    n = keep.sum(-1).clamp(min=1)  # [B, 1]
    mean = (routing * keep).sum(-1) / n  # [B, K]
    return ((routing - mean.unsqueeze(-1)).pow(2) * keep).sum(-1) / n


def routing_regularisation(routing: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_RR of a batch: the mean over users of the squared norm of diag(C), a scalar."""
    return routing_variance(routing, mask).pow(2).sum(-1).mean()


@register_auxiliary("routing")
def routing_objective(ctx: LossContext) -> torch.Tensor:
    """``loss.auxiliary.routing``: RR on the routing of the batch's training rows.

    Raises:
        ConfigError: no routing matrix, or one without gradient (ComiRec-DR and MIND route with
            stop-gradient logits, as in ComiRec, so only ComiRec-SA's attention can be trained).
    """
    routing = last_routing(ctx.model)
    if not routing.requires_grad:
        raise ConfigError(
            "loss.auxiliary.routing needs a routing matrix with gradient: use comirec_sa (or "
            "multi_tower with extractor comirec_sa); DR/MIND routing is computed without gradient"
        )
    valid = ctx.batch.target_item_ids != PAD_ITEM_ID  # the rows training_rows kept
    return routing_regularisation(routing[valid], ctx.batch.mask[valid])


def routing_collapse(routing: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Collapse diagnostics over the rows of users with >= 2 real positions.

    Returns:
        ``routing_entropy`` (mean entropy of a row, nats), ``routing_entropy_ratio`` (the same
        divided by log n, 1 = uniform over the history) and ``routing_max_weight`` (mean of a
        row's largest weight, 1 = collapsed onto one item); NaN when no user qualifies.
    """
    n = mask.sum(-1)  # [B]
    keep = n >= 2
    if not bool(keep.any()):
        nan = math.nan
        return {"routing_entropy": nan, "routing_entropy_ratio": nan, "routing_max_weight": nan}
    a, m = routing[keep].float(), mask[keep].unsqueeze(1)  # [U, K, T], [U, 1, T]
    plogp = torch.where(m & (a > 0), a * a.clamp(min=1e-30).log(), torch.zeros_like(a))
    entropy = -plogp.sum(-1)  # [U, K]
    ratio = entropy / n[keep].float().log().unsqueeze(1)
    return {
        "routing_entropy": float(entropy.mean()),
        "routing_entropy_ratio": float(ratio.mean()),
        "routing_max_weight": float(a.masked_fill(~m, 0).amax(-1).mean()),
    }
