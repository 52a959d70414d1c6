"""SeqBatch, the only tensor format the towers see; padding happens here and nowhere else.

Sequences are LEFT-padded with ``PAD_ITEM_ID`` so the most recent item is always at position
T-1, and each batch is trimmed to its longest history (``T <= max_len``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from mirec.errors import ConfigError
from mirec.schema import PAD_ITEM_ID

if TYPE_CHECKING:
    from mirec.data.splits import EvalData, TrainData


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
    kept = [
        np.asarray(s, dtype=np.int64)[-max_len:] if max_len > 0 else np.zeros(0, np.int64)
        for s in seqs
    ]
    width = max(1, max((len(s) for s in kept), default=1))
    out = np.full((len(kept), width), PAD_ITEM_ID, dtype=np.int64)
    for row, s in enumerate(kept):
        if len(s):
            out[row, width - len(s) :] = s
    return torch.from_numpy(out)


# --- training and evaluation batches --------------------------------------------------------------
TrainMode = Literal["sequence", "prefix"]
BUCKET_CHUNK_BATCHES = 50  # length bucketing sorts rows within chunks of this many batches


def _numpy_rng(generator: torch.Generator | np.random.Generator) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    draw = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
    seed = int(draw.item())
    return np.random.default_rng(seed)


def _lengths(seqs: Sequence[np.ndarray]) -> np.ndarray:
    """int64 [U] lengths of ``seqs``."""
    return np.fromiter((len(s) for s in seqs), np.int64, len(seqs))


def _train_rows(
    train: TrainData, mode: str, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows as spans of the concatenated sequences.

    Returns:
        (flat int64 [S] all items, end int64 [R] flat position of each row's target,
        length int64 [R] history length after truncation, user int64 [R] row in ``train``).
    """
    lengths = _lengths(train.sequences)
    flat = np.concatenate(train.sequences).astype(np.int64) if len(lengths) else lengths
    starts = np.cumsum(lengths) - lengths
    if mode == "sequence":
        user = np.flatnonzero(lengths >= 2)
        end = starts[user] + lengths[user] - 1
        return flat, end, np.minimum(lengths[user] - 1, max_len), user
    if mode == "prefix":
        per_user = np.maximum(lengths - 1, 0)
        user = np.repeat(np.arange(len(lengths)), per_user)
        first_row = np.cumsum(per_user) - per_user
        k = np.arange(len(user)) - first_row[user] + 1
        return flat, starts[user] + k, np.minimum(k, max_len), user
    raise ConfigError(f"batch mode must be 'sequence' or 'prefix', got {mode!r}")


def num_train_rows(train: TrainData, mode: TrainMode) -> int:
    """Rows one epoch of ``train_batches`` yields: users with >= 2 items, or all prefixes."""
    lengths = _lengths(train.sequences)
    if mode == "sequence":
        return int((lengths >= 2).sum())
    if mode == "prefix":
        return int(np.maximum(lengths - 1, 0).sum())
    raise ConfigError(f"batch mode must be 'sequence' or 'prefix', got {mode!r}")


def _batch_order(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket_by_length: bool
) -> list[np.ndarray]:
    """Shuffle rows; optionally sort by length within chunks; cut into batches; shuffle batches."""
    perm = rng.permutation(len(lengths))
    if bucket_by_length:
        chunk = BUCKET_CHUNK_BATCHES * batch_size
        for lo in range(0, len(perm), chunk):
            part = perm[lo : lo + chunk]
            perm[lo : lo + chunk] = part[np.argsort(lengths[part], kind="stable")]
    batches = [perm[lo : lo + batch_size] for lo in range(0, len(perm), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))] if bucket_by_length else batches


def _gather(
    flat: np.ndarray, end: np.ndarray, length: np.ndarray, with_pos: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Left-padded [B, T] histories flat[end-len:end] (and next items flat[end-len+1:end+1])."""
    width = max(1, int(length.max(initial=0)))
    cols = np.arange(width)
    idx = end[:, None] - width + cols[None, :]  # [B, T]
    real = cols[None, :] >= width - length[:, None]
    hist = np.where(real, flat[np.clip(idx, 0, None)], PAD_ITEM_ID)
    pos = np.where(real, flat[np.clip(idx + 1, 0, None)], PAD_ITEM_ID) if with_pos else None
    return torch.from_numpy(hist), None if pos is None else torch.from_numpy(pos)


def train_batches(
    train: TrainData,
    batch_size: int,
    max_len: int,
    *,
    mode: TrainMode,
    generator: torch.Generator | np.random.Generator,
    bucket_by_length: bool = True,
) -> Iterator[SeqBatch]:
    """One epoch of shuffled training batches.

    ``"sequence"``: one row per user with >= 2 items: hist = seq[:-1][-max_len:], pos_targets =
    seq[1:][-max_len:] (aligned with hist, both left-padded), target = seq[-1]; for causal
    models with a loss at every position. ``"prefix"``: one row per prefix k >= 1:
    hist = seq[:k][-max_len:], target = seq[k], pos_targets None.

    With ``bucket_by_length`` rows are shuffled, sorted by length within chunks of
    ``BUCKET_CHUNK_BATCHES`` batches and cut into batches whose order is shuffled, so each batch
    is trimmed to its own longest row. Deterministic for a given generator state.

    Args:
        train: training sequences.
        batch_size: rows per batch (the last batch may be smaller).
        max_len: history window.
        mode: ``"sequence"`` or ``"prefix"``.
        generator: torch or numpy generator for the shuffles.
        bucket_by_length: group rows of similar length.

    Yields:
        SeqBatch with hist_item_ids [B, T], hist_len [B], target_item_ids [B], pos_targets
        [B, T] or None, user_idx [B] (row in ``train``).
    """
    if batch_size < 1 or max_len < 1:
        raise ConfigError(f"batch_size and max_len must be >= 1, got {batch_size}, {max_len}")
    flat, end, length, user = _train_rows(train, mode, max_len)
    rng = _numpy_rng(generator)
    for rows in _batch_order(length, batch_size, rng, bucket_by_length):
        hist, pos = _gather(flat, end[rows], length[rows], with_pos=mode == "sequence")
        yield SeqBatch(
            hist_item_ids=hist,
            hist_len=torch.from_numpy(length[rows].copy()),
            target_item_ids=torch.from_numpy(flat[end[rows]]),
            pos_targets=pos,
            user_idx=torch.from_numpy(user[rows].copy()),
        )


def eval_batches(
    data: EvalData, batch_size: int, max_len: int
) -> Iterator[tuple[SeqBatch, np.ndarray]]:
    """Evaluation batches sorted by history length (fast); every row exactly once.

    Histories are the last ``max_len`` items; ``target_item_ids`` holds each row's first target
    (PAD when it has none); the full target sets stay in ``data.targets``.

    Yields:
        (SeqBatch with user_idx = rows, rows int64 [B]: indices into ``data``).
    """
    if batch_size < 1 or max_len < 1:
        raise ConfigError(f"batch_size and max_len must be >= 1, got {batch_size}, {max_len}")
    kept = np.minimum(_lengths(data.histories), max_len)
    order = np.argsort(kept, kind="stable")
    for lo in range(0, len(order), batch_size):
        rows = order[lo : lo + batch_size]
        first = [int(data.targets[r][0]) if len(data.targets[r]) else PAD_ITEM_ID for r in rows]
        yield (
            SeqBatch(
                hist_item_ids=pad_left([data.histories[r] for r in rows], max_len),
                hist_len=torch.from_numpy(kept[rows].copy()),
                target_item_ids=torch.tensor(first, dtype=torch.int64),
                pos_targets=None,
                user_idx=torch.from_numpy(rows.copy()),
            ),
            rows,
        )
