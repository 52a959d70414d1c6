"""Sequence augmentations of contrastive learning (CL4SRec / ICLRec / ELCRec): crop, mask, reorder.

All work on left-padded histories [B, T] (newest item last) and keep them left-padded; every row
with n >= 1 real items keeps at least one. Each view draws one of the three per row.

- crop: a random contiguous window of max(1, floor(crop * n)) items.
- mask: floor(mask * n) random items become PAD (removed from attention; ICLRec uses a mask
  token instead).
- reorder: a random span of floor(reorder * n) items is shuffled.
"""

from __future__ import annotations

import torch

from mirec.config import IntentConfig
from mirec.schema import PAD_ITEM_ID


def _lengths(hist: torch.Tensor) -> torch.Tensor:
    return (hist != PAD_ITEM_ID).sum(dim=1)  # [B]


def _uniform_int(high: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One integer in 0..high[b] (inclusive) per row."""
    u = torch.rand(high.shape, generator=generator, device=high.device)
    return torch.minimum((u * (high + 1).float()).long(), high)


def crop(hist: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Keep a random window of max(1, floor(ratio * n)) items per row, right-aligned."""
    b, t = hist.shape
    n = _lengths(hist)
    m = torch.clamp((ratio * n.float()).floor().long(), min=1)
    m = torch.minimum(m, n)
    start = _uniform_int(n - m, generator)  # offset inside the real items
    cols = torch.arange(t, device=hist.device).unsqueeze(0)  # [1, T]
    src = cols + (m - n + start).unsqueeze(1)  # column j <- j + (m - n + start)
    keep = cols >= (t - m).unsqueeze(1)
    out = hist.gather(1, src.clamp(0, t - 1))
    return torch.where(keep, out, torch.full_like(hist, PAD_ITEM_ID))


def mask_items(hist: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Set floor(ratio * n) random real items of each row to PAD (at least one item stays)."""
    real = hist != PAD_ITEM_ID
    n = real.sum(dim=1)
    drop = torch.minimum((ratio * n.float()).floor().long(), (n - 1).clamp(min=0))
    noise = torch.rand(hist.shape, generator=generator, device=hist.device)
    noise = noise.masked_fill(~real, 2.0)  # padding ranks last
    rank = noise.argsort(dim=1).argsort(dim=1)  # [B, T] rank of every column
    return hist.masked_fill(rank < drop.unsqueeze(1), PAD_ITEM_ID)


def reorder(hist: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Shuffle a random span of floor(ratio * n) real items per row."""
    b, t = hist.shape
    n = _lengths(hist)
    m = (ratio * n.float()).floor().long()
    start = (t - n) + _uniform_int(n - m, generator)  # first column of the span
    cols = torch.arange(t, device=hist.device).unsqueeze(0).expand(b, t).float()
    inside = (cols >= start.unsqueeze(1)) & (cols < (start + m).unsqueeze(1))
    noise = torch.rand(hist.shape, generator=generator, device=hist.device)
    span_keys = start.unsqueeze(1).float() - 0.5 + noise * m.clamp(min=1).unsqueeze(1).float()
    order = torch.where(inside, span_keys, cols).argsort(dim=1)
    return hist.gather(1, order)


def augment(hist: torch.Tensor, cfg: IntentConfig, generator: torch.Generator) -> torch.Tensor:
    """One augmented view: each row gets crop, mask or reorder at random, [B, T]."""
    views = torch.stack(
        [
            crop(hist, cfg.crop, generator),
            mask_items(hist, cfg.mask, generator),
            reorder(hist, cfg.reorder, generator),
        ]
    )  # [3, B, T]
    choice = torch.randint(0, 3, (hist.shape[0],), generator=generator, device=hist.device)
    return views[choice, torch.arange(hist.shape[0], device=hist.device)]
