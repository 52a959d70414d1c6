"""MAIL's zero-shot objective and its co-training beside the ranking tower (seed 001).

On warm users: L = L_align + L_behaviour + L_profile, with L_align = MSE(z_s, z_b),
L_behaviour = MSE(D_b(z_s), x_b) + MSE(D_b(z_b), x_b) (cross and self reconstruction of the
interest vectors) and L_profile = BCE(D_s(z_s), m) + BCE(D_s(z_b), m) over the multi-hot
profile m (unit weights, as MAIL's code). ``ZeroShotTrainer`` runs it on every training batch
of the ranking tower with its own Adam, on a detached copy of the tower's output: the zero-shot
tower follows the ranking tower's space and never back-propagates into it (MAIL's two train ops).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mirec.config import ZeroShotConfig
from mirec.data.batches import SeqBatch
from mirec.errors import ConfigError
from mirec.models.mail import ZeroShotTower
from mirec.objectives.base import LossOutput


def zero_shot_terms(
    z_profile: torch.Tensor,
    z_behaviour: torch.Tensor,
    behaviour: torch.Tensor,
    behaviour_from: tuple[torch.Tensor, torch.Tensor],
    profile_logits_from: tuple[torch.Tensor, torch.Tensor],
    profile_multi_hot: torch.Tensor,
) -> LossOutput:
    """MAIL's three terms from the encoders' and decoders' outputs.

    Args:
        z_profile: Tensor [B, H], the profile latent z_s.
        z_behaviour: Tensor [B, H], the behaviour latent z_b.
        behaviour: Tensor [B, K*D] (or [B, K, D]), the ranking tower's vectors x_b.
        behaviour_from: (D_b(z_s), D_b(z_b)), shaped like ``behaviour``.
        profile_logits_from: (D_s(z_s), D_s(z_b)), logits [B, V].
        profile_multi_hot: Tensor [B, V] of 0/1 profile targets m.

    Returns:
        LossOutput with parts ``align``, ``behaviour``, ``profile``; total = their sum.
    """
    align = F.mse_loss(z_profile, z_behaviour)
    rec_b = sum(F.mse_loss(r, behaviour) for r in behaviour_from)
    rec_s = sum(
        F.binary_cross_entropy_with_logits(r, profile_multi_hot) for r in profile_logits_from
    )
    assert isinstance(rec_b, torch.Tensor) and isinstance(rec_s, torch.Tensor)
    total = align + rec_b + rec_s
    parts = {"align": align.detach(), "behaviour": rec_b.detach(), "profile": rec_s.detach()}
    return LossOutput(total=total, parts=parts)


def multi_hot(tokens: torch.Tensor, width: int) -> torch.Tensor:
    """[B, P] hashed tokens (0 = none) -> float [B, width] with 1 at each token (column 0 = 0)."""
    out = torch.zeros(tokens.shape[0], width)
    out.scatter_(1, tokens, 1.0)
    out[:, 0] = 0.0
    return out


def zero_shot_loss(
    tower: ZeroShotTower, profiles: torch.Tensor, user_vecs: torch.Tensor
) -> LossOutput:
    """MAIL's loss for warm users with hashed ``profiles`` [B, P] and interests [B, K, D].

    ``user_vecs`` is detached here: the ranking tower gets no gradient from this loss.
    """
    target = user_vecs.detach()
    z_s, z_b = tower.encode_profile(profiles), tower.encode_behaviour(target)
    return zero_shot_terms(
        z_s,
        z_b,
        target,
        (tower.decode_behaviour(z_s), tower.decode_behaviour(z_b)),
        (tower.decode_profile(z_s), tower.decode_profile(z_b)),
        multi_hot(profiles, tower.cfg.profile_buckets + 1),
    )


class ZeroShotTrainer:
    """Trains the zero-shot tower on every training forward pass of the user tower.

    Registered as a forward hook of the user tower: in training mode it takes the tower's
    output [B, K, D] for the batch's rows (``batch.user_idx`` = rows of the training users),
    detaches it and takes one Adam step of the zero-shot loss on the zero-shot tower only.

    Args:
        tower: the zero-shot tower.
        profiles: LongTensor [U_train, P] hashed profiles of the training users, in split order.
        cfg: its config (``lr``).
    """

    def __init__(self, tower: ZeroShotTower, profiles: torch.Tensor, cfg: ZeroShotConfig) -> None:
        self.tower, self.profiles = tower, profiles
        self.opt = torch.optim.Adam(tower.parameters(), lr=cfg.lr)
        self.last: LossOutput | None = None

    def __call__(self, module: nn.Module, inputs: tuple[object, ...], output: torch.Tensor) -> None:
        """The forward hook: one zero-shot step per training batch of the ranking tower."""
        if not module.training or not torch.is_grad_enabled():
            return
        batch = inputs[0]
        if not isinstance(batch, SeqBatch) or batch.user_idx is None:
            raise ConfigError("zero-shot training needs SeqBatch rows with user_idx")
        rows = batch.hist_len > 0
        if not bool(rows.any()):
            return
        profiles = self.profiles[batch.user_idx[rows].cpu()].to(output.device)
        out = zero_shot_loss(self.tower, profiles, output[rows])
        self.opt.zero_grad(set_to_none=True)
        out.total.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.last = out
