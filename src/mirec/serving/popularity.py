"""Popularity fallback: items ranked by behaviour-event count, from the feature build.

The counts are the ``item_features`` table the Spark job wrote into the Feast repository
(``ITEM_IDX``, ``ITEM_POPULARITY``), read once at start-up as a file: no online lookup, so the
fallback still works when the online store is down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mirec.features.repo import Layout
from mirec.schema import ITEM_FEATURES_FV, ITEM_IDX, ITEM_POPULARITY

log = logging.getLogger(__name__)


class Popularity:
    """Item indices ordered by count, most popular first.

    Args:
        counts: float [N+1] behaviour counts by item index (row 0 = PAD, ignored).
    """

    def __init__(self, counts: np.ndarray) -> None:
        counts = np.asarray(counts, dtype=np.float64).copy()
        counts[0] = -np.inf
        order = np.argsort(-counts, kind="stable")
        self.order = order[np.isfinite(counts[order])].astype(np.int64)
        self.counts = counts

    @classmethod
    def from_feature_repo(cls, repo: str | Path, num_items: int) -> Popularity:
        """Counts of items 1..``num_items`` from a feature build (missing table: all zero)."""
        import pandas as pd

        table = Layout(Path(repo)).table(ITEM_FEATURES_FV)
        counts = np.zeros(num_items + 1, dtype=np.float64)
        if not table.is_dir():
            log.warning("no %s table in %s: popularity fallback ranks by index", table, repo)
            return cls(counts)
        frame = pd.read_parquet(table, columns=[ITEM_IDX, ITEM_POPULARITY])
        idx = frame[ITEM_IDX].to_numpy(dtype=np.int64)
        keep = (idx >= 1) & (idx <= num_items)
        counts[idx[keep]] = frame[ITEM_POPULARITY].to_numpy(dtype=np.float64)[keep]
        return cls(counts)

    def top(self, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most popular items not in ``exclude``: (indices, counts as scores)."""
        if exclude:
            drop = np.zeros(self.counts.shape[0] + 1, dtype=bool)
            ex = np.asarray(exclude, dtype=np.int64)
            drop[ex[(ex >= 0) & (ex < drop.shape[0])]] = True
            chosen = self.order[~drop[self.order]][:k]
        else:
            chosen = self.order[:k]
        return chosen, self.counts[chosen].astype(np.float32)
