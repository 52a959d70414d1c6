"""ELCRec's end-to-end learnable clustering loss (ELCM, Liu et al., NeurIPS 2024, eq. 3).

    L_cluster = -1/(k(k-1)) sum_i sum_{j != i} ||c_i - c_j||^2 + 1/(b k) sum_i sum_j ||h_i - c_j||^2

on L2-normalised centres c (``model.num_intents`` of them) and behaviour vectors h (the mean of
a row's K interest vectors): the first term separates the intents, the second pulls every
behaviour towards all centres (the paper's choice, against the confirmation bias of a
nearest-centre pull). Weight ``loss.auxiliary.clustering``. The term is 0 until the centres were
initialised by k-means after ``loss.intents.warmup_epochs`` (``mirec.objectives.epoch_hooks``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mirec.errors import ConfigError
from mirec.models.intents import IntentCentres, behaviour_vectors, intent_centres
from mirec.models.two_tower import TwoTower
from mirec.objectives.base import LossContext
from mirec.objectives.registry import register_auxiliary


def clustering_loss(behaviour: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """L_cluster of behaviour vectors [b, D] and centres [k, D] (k >= 2), a scalar."""
    h, c = F.normalize(behaviour, dim=-1), F.normalize(centres, dim=-1)
    k = c.shape[0]
    separation = (c.unsqueeze(0) - c.unsqueeze(1)).pow(2).sum(-1).sum() / (k * (k - 1))
    alignment = (h.unsqueeze(1) - c.unsqueeze(0)).pow(2).sum(-1).mean()  # [b, k] -> mean
    return alignment - separation


def required_centres(model: TwoTower, term: str) -> IntentCentres:
    """The model's intent centres; ConfigError naming ``term`` when the model has none."""
    centres = intent_centres(model)
    if centres is None:
        raise ConfigError(f"loss.auxiliary.{term} needs intent centres: set model.num_intents >= 2")
    return centres


@register_auxiliary("clustering")
def clustering_objective(ctx: LossContext) -> torch.Tensor:
    """``loss.auxiliary.clustering`` on the batch's training rows (0 before the k-means start)."""
    centres = required_centres(ctx.model, "clustering")
    if not centres.ready:
        return ctx.user_vecs.sum() * 0.0
    return clustering_loss(behaviour_vectors(ctx.user_vecs), centres.centres)
