"""User-representation repel (seed 000): push a user's K interest vectors apart.

L_repel = mean over rows of 2 / (K (K - 1)) * sum_{k < l} max(0, cos(v_k, v_l) - m)^2, with the
margin m = ``loss.repel_margin``; weight ``loss.auxiliary.repel``. The multi-tower paper was
withdrawn before any text was published, so this form is our design (see
``mirec.models.multi_tower``). It acts on the output vectors, unlike REMI's routing
regularisation, which acts on the routing weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mirec.errors import ConfigError
from mirec.objectives.base import LossContext
from mirec.objectives.registry import register_auxiliary


def interest_cosines(user_vecs: torch.Tensor) -> torch.Tensor:
    """Cosine of every pair k < l of each row's interests: [P, K, D] -> [P, K (K - 1) / 2].

    A zero vector (an empty history) has cosine 0 with everything.
    """
    k = user_vecs.shape[1]
    unit = F.normalize(user_vecs, dim=-1)
    cos = unit @ unit.transpose(1, 2)  # [P, K, K]
    upper = torch.triu_indices(k, k, offset=1, device=user_vecs.device)
    return cos[:, upper[0], upper[1]]


def repel_loss(user_vecs: torch.Tensor, margin: float) -> torch.Tensor:
    """The repel term of ``user_vecs`` [P, K, D] (K >= 2), a scalar.

    Raises:
        ConfigError: K < 2 (a single interest has nothing to repel).
    """
    if user_vecs.shape[1] < 2:
        raise ConfigError(
            f"loss.auxiliary.repel needs K >= 2 interest vectors, the user tower gives "
            f"{user_vecs.shape[1]}"
        )
    return F.relu(interest_cosines(user_vecs) - margin).pow(2).mean()


@register_auxiliary("repel")
def repel_objective(ctx: LossContext) -> torch.Tensor:
    """``loss.auxiliary.repel``: interest repel on the batch's training rows."""
    return repel_loss(ctx.user_vecs, ctx.cfg.repel_margin)
