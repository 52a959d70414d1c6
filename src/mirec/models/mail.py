"""MAIL zero-shot user tower (seed 001): user profile -> the user tower's interest vectors.

Dual auto-encoders between two modalities of a warm user: the profile (hashed attribute tokens:
ml-100k age bucket, gender, occupation, zip region; the synthetic profiles) and the behaviour
representation (the ranking tower's K interest vectors, flattened). Each has its own encoder into
a shared latent; the two decoders (behaviour, profile) are shared by both latents, so a latent
from the profile decodes into "virtual" interest vectors. The losses (alignment, self and cross
reconstruction) are in ``mirec.objectives.mail``; the tower is trained beside the ranking tower
on a stop-gradient copy of its output and never changes it.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.config import ZeroShotConfig


def _mlp(width_in: int, hidden: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(width_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, width_out)
    )


class ZeroShotTower(nn.Module):
    """Profile and behaviour encoders into one latent, and the two shared decoders.

    Args:
        num_interests: K of the ranking tower.
        dim: D of the ranking tower.
        cfg: latent width, profile buckets.
    """

    def __init__(self, num_interests: int, dim: int, cfg: ZeroShotConfig) -> None:
        super().__init__()
        self.num_interests, self.dim, self.cfg = num_interests, dim, cfg
        hidden, flat = cfg.hidden, num_interests * dim
        self.profile_table = nn.Embedding(cfg.profile_buckets + 1, dim, padding_idx=0)
        self.profile_encoder = _mlp(dim, hidden, hidden)
        self.behaviour_encoder = _mlp(flat, hidden, hidden)
        self.behaviour_decoder = _mlp(hidden, hidden, flat)
        self.profile_decoder = _mlp(hidden, hidden, cfg.profile_buckets + 1)

    def encode_profile(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hashed profile tokens [B, P] (0 = none) -> latent z_s [B, H]."""
        present = (tokens != 0).unsqueeze(-1)  # [B, P, 1]
        bag = self.profile_table(tokens).sum(1) / present.sum(1).clamp(min=1)  # [B, D]
        encoded: torch.Tensor = self.profile_encoder(bag)
        return encoded

    def encode_behaviour(self, user_vecs: torch.Tensor) -> torch.Tensor:
        """Interest vectors [B, K, D] -> latent z_b [B, H]."""
        encoded: torch.Tensor = self.behaviour_encoder(user_vecs.flatten(1))
        return encoded

    def decode_behaviour(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent [B, H] -> interest vectors [B, K, D]."""
        flat: torch.Tensor = self.behaviour_decoder(latent)
        return flat.view(-1, self.num_interests, self.dim)

    def decode_profile(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent [B, H] -> profile-bucket logits [B, profile_buckets + 1] (column 0 unused)."""
        logits: torch.Tensor = self.profile_decoder(latent)
        return logits

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Virtual interest vectors of users with these profiles: [B, P] -> [B, K, D]."""
        return self.decode_behaviour(self.encode_profile(tokens))


def blend_interests(
    tower_vecs: torch.Tensor,
    zero_shot_vecs: torch.Tensor,
    hist_len: torch.Tensor,
    max_history: int,
    weight: float,
) -> torch.Tensor:
    """The interest vectors served: zero-shot at 0 events, a blend up to ``max_history``.

    Args:
        tower_vecs: Tensor [B, K, D] from the ranking tower.
        zero_shot_vecs: Tensor [B, K, D] from ``ZeroShotTower``.
        hist_len: LongTensor [B] of history lengths.
        max_history: users with 1..max_history events get the blend.
        weight: the blend's weight on the zero-shot vectors.

    Returns:
        Tensor [B, K, D]: ``zero_shot`` where hist_len = 0, ``(1 - w) tower + w zero_shot`` where
        1 <= hist_len <= max_history, ``tower`` above.
    """
    blended = (1 - weight) * tower_vecs + weight * zero_shot_vecs
    short = (hist_len <= max_history).view(-1, 1, 1)
    empty = (hist_len == 0).view(-1, 1, 1)
    return torch.where(empty, zero_shot_vecs, torch.where(short, blended, tower_vecs))
