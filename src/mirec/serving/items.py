"""Adding and updating items without retraining (``POST /items``).

A trained item is re-embedded by the bundle's item tower (its vector stays the one the index
holds) and its features are rewritten. An item the model never saw has no id embedding: it is
placed at the mean of the item-tower vectors of the trained items it names in ``similar_to``
(at least one is required), added to the faiss index under the next free index, and its
features are written to the online store, so the next request can retrieve it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from mirec.serving.model import ServingModel
from mirec.serving.schemas import ItemIn, ItemsResponse, RequestError

log = logging.getLogger(__name__)


class ItemFeatureWriter(Protocol):
    """Writes item feature rows to the online store."""

    def write_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert rows of (item id, index, attributes)."""
        ...


class FeastItemFeatures:
    """The ``item_features`` view of a Feast store (through its ``FeatureStore`` object)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def write_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write the rows now (popularity 0: no behaviour yet)."""
        import pandas as pd

        from mirec.schema import (
            FEAST_CREATED_TS,
            FEAST_TS,
            ITEM_ATTRIBUTES,
            ITEM_FEATURES_FV,
            ITEM_ID,
            ITEM_IDX,
            ITEM_POPULARITY,
        )

        now = datetime.now(UTC)
        frame = pd.DataFrame(
            {
                ITEM_ID: [r["item_id"] for r in rows],
                ITEM_IDX: [int(r["item_idx"]) for r in rows],
                ITEM_ATTRIBUTES: [list(r["attributes"]) for r in rows],
                ITEM_POPULARITY: [0] * len(rows),
                FEAST_TS: [now] * len(rows),
                FEAST_CREATED_TS: [now] * len(rows),
            }
        )
        self.store.write_to_online_store(ITEM_FEATURES_FV, frame)


class ItemCatalog:
    """Upserts items into the served model's index and the item features."""

    def __init__(self, model: ServingModel, features: ItemFeatureWriter | None = None) -> None:
        self.model = model
        self.features = features

    def upsert(self, items: Sequence[ItemIn]) -> ItemsResponse:
        """Add new items, update known ones; 400 naming the item when one cannot be embedded."""
        if not items:
            raise RequestError("items must hold at least one item")
        known = self.model.encode([i.item_id for i in items])
        vectors = {
            i.item_id: self._vector(i) for i, idx in zip(items, known, strict=True) if idx < 0
        }
        added, updated, rows = [], [], []
        for item, idx in zip(items, known, strict=True):
            if idx < 0:
                idx = self.model.add_item(item.item_id, vectors[item.item_id])
                added.append(item.item_id)
            else:
                updated.append(item.item_id)
            rows.append({"item_id": item.item_id, "item_idx": idx, "attributes": item.attributes})
        if self.features is not None:
            self.features.write_items(rows)
        return ItemsResponse(added=added, updated=updated, num_items=self.model.num_items)

    def _vector(self, item: ItemIn) -> np.ndarray:
        if not item.similar_to:
            raise RequestError(
                f"item {item.item_id!r} is new: give the trained items it resembles in similar_to"
            )
        idx = self.model.encode(item.similar_to)
        bad = [
            s
            for s, i in zip(item.similar_to, idx, strict=True)
            if not 0 < i <= self.model.vocab_size
        ]
        if bad:
            raise RequestError(f"item {item.item_id!r}: similar_to has unknown item ids {bad[:10]}")
        return self.model.item_vectors(idx).mean(axis=0)
