"""SeqBatch, the only tensor format the towers see; padding happens here and nowhere else.

Sequences are LEFT-padded with ``PAD_ITEM_ID`` so the most recent item is always at position
T-1, and each batch is trimmed to its longest history (``T <= max_len``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mirec.schema import PAD_ITEM_ID


@dataclass(frozen=True, slots=True)
class SeqBatch:
    """A batch of user histories.

    Attributes:
        hist_item_ids: LongTensor [B, T], left-padded item indices, oldest first.
        hist_len: LongTensor [B], number of real items per row (0 allowed).
        target_item_ids: LongTensor [B], the item that follows the history (PAD if none).
        pos_targets: LongTensor [B, T] or None: the next item after every position (PAD where
            there is no target); set for causal "sequence" training, None otherwise.
        user_idx: LongTensor [B] or None: row index of the user in its split.
    """

    hist_item_ids: torch.Tensor
    hist_len: torch.Tensor
    target_item_ids: torch.Tensor
    pos_targets: torch.Tensor | None = None
    user_idx: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        """BoolTensor [B, T], True at real (non-pad) positions."""
        return self.hist_item_ids != PAD_ITEM_ID


def pad_left(seqs: Sequence[Sequence[int] | np.ndarray], max_len: int) -> torch.Tensor:
    """Left-pad (and left-truncate to the last ``max_len`` items) into LongTensor [B, T].

    T is the longest kept length in ``seqs`` (at least 1, so empty histories still batch).
    """
    kept = [np.asarray(s, dtype=np.int64)[-max_len:] if max_len > 0 else np.zeros(0, np.int64)
            for s in seqs]
    width = max(1, max((len(s) for s in kept), default=1))
    out = np.full((len(kept), width), PAD_ITEM_ID, dtype=np.int64)
    for row, s in enumerate(kept):
        if len(s):
            out[row, width - len(s):] = s
    return torch.from_numpy(out)
