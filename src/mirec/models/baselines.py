"""Non-neural floors every model must beat: most-popular and item-to-item co-occurrence (ItemKNN).

Both are ``TwoTower`` models with fixed weights, so they train into a normal bundle
(``model.name`` popularity / itemknn: fitted from the training sequences, no epochs), load back
with ``ModelBundle.load`` and rank through the same evaluation code. Their item tower is one
column: the item's training count (popularity) or ItemKNN's popularity tie-break; the user tower
returns a constant [B, 1, 1] of ones. Popularity is therefore exactly the inner product an index
serves. ItemKNN's ``score_all`` is exact co-occurrence scoring of the history, which no
fixed-size vector reproduces: its ``index_serves`` is False, serving scores it with
``ModelBundle.score_users`` and an index over its item vectors ranks by popularity only (its
fallback for a history without co-occurring items).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from mirec.config import ModelConfig
from mirec.data.batches import SeqBatch
from mirec.errors import ConfigError
from mirec.models.item_tower import ItemTower
from mirec.models.two_tower import TwoTower
from mirec.schema import PAD_ITEM_ID

log = logging.getLogger(__name__)


def item_counts(sequences: Sequence[np.ndarray], num_items: int) -> np.ndarray:
    """Occurrences of every item in the sequences, int64 [N+1] (PAD counted as 0)."""
    flat = _concat(sequences)
    counts = np.bincount(flat, minlength=num_items + 1)[: num_items + 1].astype(np.int64)
    counts[PAD_ITEM_ID] = 0
    return counts


def _concat(sequences: Sequence[np.ndarray]) -> np.ndarray:
    arrays = [np.asarray(s, dtype=np.int64) for s in sequences]
    return np.concatenate(arrays) if arrays else np.zeros(0, np.int64)


class ConstantUser(nn.Module):
    """User tower of the floors: one interest vector [1] per user, whatever the history."""

    num_interests = 1

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        """Ones, [B, 1, 1]."""
        rows = batch.hist_item_ids.shape[0]
        return torch.ones(rows, 1, 1, device=batch.hist_item_ids.device)


def _column_tower(values: torch.Tensor) -> ItemTower:
    """A frozen one-dimensional item tower whose vector of item i is ``values[i]``."""
    tower = ItemTower(values.shape[0] - 1, 1)
    tower.embedding.weight.requires_grad_(False)
    with torch.no_grad():
        tower.embedding.weight.copy_(values.reshape(-1, 1))
    return tower


class Popularity(TwoTower):
    """Scores every item by its training count, whatever the history.

    Args:
        item_counts: int or float [N+1], the count of every item (row 0 = PAD, ignored).
    """

    def __init__(self, item_counts: np.ndarray) -> None:
        counts = torch.as_tensor(np.asarray(item_counts, dtype=np.float32))
        super().__init__(_column_tower(counts), ConstantUser())

    @property
    def counts(self) -> torch.Tensor:
        """The counts, float32 [N+1]."""
        return self.item_tower.embedding.weight[:, 0]

    @classmethod
    def fit(cls, sequences: Sequence[np.ndarray], num_items: int) -> Popularity:
        """Count items in the training sequences."""
        return cls(item_counts(sequences, num_items))


def cooccurrence(
    sequences: Sequence[np.ndarray], num_items: int, window: int, backward_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance-weighted co-occurrence within ``window`` positions of the same sequence.

    Item b at d positions after item a adds 1/d to C[a, b] and ``backward_weight``/d to C[b, a].
    Repeats of the same item are skipped.

    Returns:
        (rows, cols, weights): the non-zero entries of C, each of length nnz.
    """
    flat = _concat(sequences)
    owner = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    width = num_items + 1
    keys, weights = [], []
    for d in range(1, window + 1):
        same = (owner[:-d] == owner[d:]) & (flat[:-d] != flat[d:])
        a, b = flat[:-d][same], flat[d:][same]
        keys += [a * width + b, b * width + a]
        weights += [np.full(len(a), 1.0 / d), np.full(len(a), backward_weight / d)]
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    uniq, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    summed = np.bincount(inverse, weights=np.concatenate(weights))
    keep = summed > 0
    return uniq[keep] // width, uniq[keep] % width, summed[keep]


def top_neighbors(
    rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, num_items: int, num_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep each item's ``num_neighbors`` most similar items.

    Returns:
        (ids int64 [N+1, M], sims float32 [N+1, M]); unused slots hold PAD with similarity 0.
    """
    order = np.lexsort((-sims, rows))  # by row, then similarity descending
    rows, cols, sims = rows[order], cols[order], sims[order]
    starts = np.searchsorted(rows, np.arange(num_items + 1))
    rank = np.arange(len(rows)) - starts[rows]
    keep = rank < num_neighbors
    ids = np.full((num_items + 1, num_neighbors), PAD_ITEM_ID, dtype=np.int64)
    out = np.zeros((num_items + 1, num_neighbors), dtype=np.float32)
    ids[rows[keep], rank[keep]] = cols[keep]
    out[rows[keep], rank[keep]] = sims[keep]
    return ids, out


class ItemKNN(TwoTower):
    """Item-to-item co-occurrence recommender (ItemKNN with sequence windows).

    Similarity: distance-weighted co-occurrence within a window of each training sequence
    (``cooccurrence``), cosine-normalised by item counts, C[a, b] / sqrt(n_a n_b), keeping the top
    ``num_neighbors`` per item. A user's score for item i is the sum over the last ``num_recent``
    history items h (newest weight 1, then ``recency_decay`` per step back) of sim(h, i). Ties,
    including every item with no co-occurrence, are broken by popularity: a popularity term far
    below the smallest positive score is added. That term is the item tower's one column.

    Build with ``ItemKNN.fit``; ``ItemKNN(num_items)`` is the empty model a bundle loads into.

    Args:
        num_items: N.
        num_neighbors: M, neighbours kept per item.
        num_recent: history items used when scoring.
        recency_decay: weight factor per step back in the history, in (0, 1].
    """

    index_serves = False  # score_all is not an inner product of user and item vectors

    def __init__(
        self,
        num_items: int,
        num_neighbors: int = 100,
        num_recent: int = 5,
        recency_decay: float = 0.6,
    ) -> None:
        super().__init__(_column_tower(torch.zeros(num_items + 1)), ConstantUser())
        self.num_recent = num_recent
        self.recency_decay = recency_decay
        self.neighbor_ids: torch.Tensor
        self.neighbor_sims: torch.Tensor
        self.register_buffer("neighbor_ids", torch.zeros(num_items + 1, num_neighbors).long())
        self.register_buffer("neighbor_sims", torch.zeros(num_items + 1, num_neighbors))

    @property
    def tie_break(self) -> torch.Tensor:
        """The popularity tie-break of every item, float32 [N+1]."""
        return self.item_tower.embedding.weight[:, 0]

    @classmethod
    def fit(
        cls,
        sequences: Sequence[np.ndarray],
        num_items: int,
        *,
        window: int = 10,
        backward_weight: float = 0.5,
        num_neighbors: int = 100,
        num_recent: int = 5,
        recency_decay: float = 0.6,
    ) -> ItemKNN:
        """Fit on the training sequences (item indices in time order, oldest first).

        Args:
            sequences: one int array per user.
            num_items: N.
            window: co-occurrence window in positions.
            backward_weight: weight of "a after b" relative to "b after a" for C[a, b].
            num_neighbors: neighbours kept per item.
            num_recent: history items used when scoring.
            recency_decay: weight factor per step back in the history, in (0, 1].

        Raises:
            ConfigError: a parameter is out of range.
        """
        if window < 1 or num_neighbors < 1 or num_recent < 1 or not 0 < recency_decay <= 1:
            raise ConfigError(
                f"ItemKNN needs window, num_neighbors, num_recent >= 1 and 0 < recency_decay <= 1;"
                f" got {window}, {num_neighbors}, {num_recent}, {recency_decay}"
            )
        counts = item_counts(sequences, num_items)
        rows, cols, weights = cooccurrence(sequences, num_items, window, backward_weight)
        sims = weights / np.sqrt(counts[rows].astype(np.float64) * counts[cols])
        ids, top = top_neighbors(rows, cols, sims, num_items, num_neighbors)
        log.info("ItemKNN: %d co-occurring pairs over %d items", len(rows), num_items)
        model = cls(num_items, num_neighbors, num_recent, recency_decay)
        model._set_tables(ids, top, counts)
        return model

    @torch.no_grad()
    def _set_tables(self, ids: np.ndarray, sims: np.ndarray, counts: np.ndarray) -> None:
        """Neighbour tables [N+1, M] and the popularity tie-break from item ``counts``."""
        self.neighbor_ids.copy_(torch.as_tensor(ids, dtype=torch.long))
        self.neighbor_sims.copy_(torch.as_tensor(sims, dtype=torch.float32))
        positive = sims[sims > 0]
        smallest = float(positive.min()) if positive.size else 1.0
        tie_scale = 0.1 * smallest * self.recency_decay ** (self.num_recent - 1)
        pop = np.asarray(counts, dtype=np.float64)
        pop = pop / pop.max() if pop.max() > 0 else pop
        self.tie_break.copy_(torch.as_tensor(pop * tie_scale, dtype=torch.float32))

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """Neighbour scores of every item for every row, [B, N+1]."""
        hist = batch.hist_item_ids[:, -self.num_recent :]  # [B, L]
        b, length = hist.shape
        steps_back = torch.arange(length - 1, -1, -1, dtype=torch.float32, device=hist.device)
        weight = self.recency_decay**steps_back * (hist != PAD_ITEM_ID)  # [B, L]
        ids = self.neighbor_ids[hist].view(b, -1)  # [B, L*M]
        vals = (self.neighbor_sims[hist] * weight.unsqueeze(-1)).view(b, -1)  # [B, L*M]
        scores = self.tie_break.detach().unsqueeze(0).repeat(b, 1)  # [B, N+1]
        return scores.scatter_add_(1, ids, vals)


# model.name -> the empty floor of N items that a bundle's weights load into
FLOOR_MODELS: dict[str, Callable[[int], TwoTower]] = {
    "popularity": lambda num_items: Popularity(np.zeros(num_items + 1)),
    "itemknn": ItemKNN,
}


def check_floor(cfg: ModelConfig) -> None:
    """Refuse settings a floor cannot honour.

    Raises:
        ConfigError: ``cfg.name`` is not a floor, or item attributes are asked for.
    """
    if cfg.name not in FLOOR_MODELS:
        raise ConfigError(f"model.name {cfg.name!r} is not a floor; floors: {sorted(FLOOR_MODELS)}")
    if cfg.use_attributes:
        raise ConfigError(f"model.name {cfg.name!r} is a floor: it takes no use_attributes")


def fit_floor(cfg: ModelConfig, sequences: Sequence[np.ndarray], num_items: int) -> TwoTower:
    """The floor ``cfg.name`` fitted on the training sequences (as the quality benchmark fits it).

    Raises:
        ConfigError: see ``check_floor``.
    """
    check_floor(cfg)
    if cfg.name == "popularity":
        return Popularity.fit(sequences, num_items)
    return ItemKNN.fit(sequences, num_items)
