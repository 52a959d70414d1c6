"""Small helpers shared by the user towers: right-aligned positions and the capsule squash."""

from __future__ import annotations

import torch

from mirec.errors import ConfigError


def right_aligned_positions(length: int, max_len: int, device: torch.device) -> torch.Tensor:
    """Position index of every column of a left-padded [B, T] history, counted from the right.

    The most recent item (column T-1) gets position 0, so extra left padding never changes the
    position an item sees, which makes the towers padding-invariant.

    Args:
        length: T, the width of the batch.
        max_len: the number of positions the tower was built with.
        device: where to create the index.

    Returns:
        LongTensor [T]: T-1, ..., 1, 0.

    Raises:
        ConfigError: T is larger than the tower's ``max_len``.
    """
    if length > max_len:
        raise ConfigError(
            f"history width {length} exceeds the model's max_len {max_len}; build the model with "
            f"max_len >= data.max_len"
        )
    return torch.arange(length - 1, -1, -1, device=device)


def squash(vectors: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Capsule squash ``|s|^2 / (1 + |s|^2) * s / |s|`` over the last axis (0 stays 0).

    Args:
        vectors: Tensor [..., D].
        eps: keeps the norm's square root differentiable at 0.

    Returns:
        Tensor [..., D] with norms in [0, 1).
    """
    norm_sq = vectors.pow(2).sum(-1, keepdim=True)  # [..., 1]
    return vectors * (norm_sq / (1 + norm_sq) / torch.sqrt(norm_sq + eps))
