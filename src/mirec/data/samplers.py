"""Negative samplers over items 1..N with the log-probability each id is drawn (for logQ).

Every sampler draws with replacement and never draws PAD (0). ``log_q(ids)`` gives the log
probability of drawing each id (PAD gets 0.0, a finite placeholder, so masked positions stay
NaN-free).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from mirec.errors import ConfigError
from mirec.schema import PAD_ITEM_ID


@dataclass(frozen=True, slots=True)
class NegativeDraw:
    """Sampled negatives.

    Attributes:
        ids: LongTensor [M] item indices in 1..N.
        log_q: FloatTensor [M], log probability of drawing each id.
    """

    ids: torch.Tensor
    log_q: torch.Tensor


class NegativeSampler(Protocol):
    """Draws negatives and reports the draw probability of any item."""

    def draw(self, num: int, generator: torch.Generator) -> NegativeDraw:
        """Draw ``num`` ids with replacement on the generator's device."""
        ...

    def log_q(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Log draw probability of ``item_ids`` (any shape; same shape out)."""
        ...


class _TableSampler:
    """Sampling by inverse CDF over a probability table [N+1] (index 0 = PAD, probability 0)."""

    def __init__(self, probs: np.ndarray) -> None:
        probs = np.asarray(probs, dtype=np.float64)
        if len(probs) < 2 or probs[1:].sum() <= 0:
            raise ConfigError(f"a sampler needs at least one item, got {len(probs) - 1}")
        probs = probs.copy()
        probs[PAD_ITEM_ID] = 0.0
        probs /= probs.sum()
        self.num_items = len(probs) - 1
        with np.errstate(divide="ignore"):
            log_q = np.log(probs)
        log_q[PAD_ITEM_ID] = 0.0
        self._log_q = torch.from_numpy(log_q.astype(np.float32))
        self._cdf = torch.from_numpy(np.cumsum(probs[1:]))  # float64 [N]
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = (self._log_q.to(device), self._cdf.to(device))
        return self._on[device]

    def draw(self, num: int, generator: torch.Generator) -> NegativeDraw:
        """Draw ``num`` ids with replacement (LongTensor [num]) and their log_q."""
        log_q, cdf = self._tables(generator.device)
        u = torch.rand(num, generator=generator, device=generator.device, dtype=torch.float64)
        ids = torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_(max=self.num_items - 1) + 1
        return NegativeDraw(ids=ids, log_q=log_q[ids])

    def log_q(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Log draw probability per id (0.0 for PAD)."""
        return self._tables(item_ids.device)[0][item_ids]


def _counts(item_counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(item_counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) < 2 or (counts < 0).any():
        raise ConfigError(f"item_counts must be a non-negative [N+1] vector, got {counts.shape}")
    return counts


class UniformSampler(_TableSampler):
    """Uniform over items 1..N."""

    def __init__(self, num_items: int) -> None:
        super().__init__(np.r_[0.0, np.ones(num_items)])


class PopularitySampler(_TableSampler):
    """Proportional to ``(count + 1) ** power`` (add-one smoothing, so every item can be drawn)."""

    def __init__(self, item_counts: np.ndarray, power: float = 1.0) -> None:
        super().__init__((_counts(item_counts) + 1.0) ** power)


def log_uniform_probs(item_counts: np.ndarray) -> np.ndarray:
    """float64 [N+1]: Zipfian over popularity rank r (0 = most frequent; ties by lower id).

    ``P(r) = (log(r + 2) - log(r + 1)) / log(N + 1)``, as TF's ``log_uniform_candidate_sampler``
    on frequency-sorted ids (ComiRec re-numbers items by descending frequency).
    """
    counts = _counts(item_counts)[1:]
    order = np.lexsort((np.arange(len(counts)), -counts))  # ids (minus 1) by rank
    ranks = np.empty(len(counts), dtype=np.float64)
    ranks[order] = np.arange(len(counts))
    probs = (np.log(ranks + 2) - np.log(ranks + 1)) / math.log(len(counts) + 1)
    return np.r_[0.0, probs]


class LogUniformSampler(_TableSampler):
    """Log-uniform (Zipfian) over popularity rank, as ComiRec's TF sampled softmax."""

    def __init__(self, item_counts: np.ndarray) -> None:
        super().__init__(log_uniform_probs(item_counts))


class InBatchSampler(PopularitySampler):
    """No extra negatives: the other rows' targets serve; ``log_q`` is popularity (unigram)."""

    def draw(self, num: int, generator: torch.Generator) -> NegativeDraw:
        """An empty draw (in-batch negatives come from the batch itself)."""
        empty = torch.zeros(0, dtype=torch.int64, device=generator.device)
        return NegativeDraw(ids=empty, log_q=torch.zeros(0, device=generator.device))


def _uniform(item_counts: np.ndarray) -> NegativeSampler:
    return UniformSampler(len(_counts(item_counts)) - 1)


def _popularity(item_counts: np.ndarray) -> NegativeSampler:
    return PopularitySampler(item_counts)


def _log_uniform(item_counts: np.ndarray) -> NegativeSampler:
    return LogUniformSampler(item_counts)


def _in_batch(item_counts: np.ndarray) -> NegativeSampler:
    return InBatchSampler(item_counts)


SAMPLERS: dict[str, Callable[[np.ndarray], NegativeSampler]] = {
    "uniform": _uniform,
    "popularity": _popularity,
    "log_uniform": _log_uniform,
    "in_batch": _in_batch,
}


def build_sampler(name: str, item_counts: np.ndarray) -> NegativeSampler:
    """The sampler ``name`` over items 1..N, with ``item_counts`` int [N+1] from training.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](item_counts)
