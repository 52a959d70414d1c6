"""The item tower and index as their own service: search, and ``POST /items``.

bentoml serve serving.item_tower:ItemTower --host 127.0.0.1 --port 3002
"""

from __future__ import annotations

import bentoml
import numpy as np
import torch
from pydantic import BaseModel

from mirec.index import search_interests
from mirec.registry import BUNDLE_DIR
from mirec.serving.items import ItemCatalog
from mirec.serving.model import load_bundle
from mirec.serving.recommender import pin_faiss_threads
from mirec.serving.schemas import ItemIn, RequestError
from serving.common import http_error, model_tag


class SearchResult(BaseModel):
    """Merged top-k per user: item indices (-1 = none) and scores."""

    ids: list[list[int]]
    scores: list[list[float]]


class AddedItems(BaseModel):
    """External id -> index of each item the index now holds under a new index."""

    added: dict[str, int]
    num_items: int


@bentoml.service(name="mirec_item_tower", workers=1)
class ItemTower:
    """The bundle's faiss index and item tower."""

    bundle = bentoml.models.BentoModel(model_tag())

    def __init__(self) -> None:
        torch.set_num_threads(1)
        self.model = load_bundle(self.bundle.path_of(BUNDLE_DIR), str(self.bundle.tag))
        self.catalog = ItemCatalog(self.model)

    @bentoml.api(route="/search")
    def search(
        self, vectors: list[list[list[float]]], k: int, exclude: list[list[int]]
    ) -> SearchResult:
        """Top-k items by max score over each user's K vectors, excluded ids removed."""
        pin_faiss_threads(1)  # per calling thread (BentoML runs sync APIs in a thread pool)
        queries = np.asarray(vectors, dtype=np.float32)
        ids, scores = search_interests(self.model.index, queries, k, exclude=exclude)
        finite = np.where(np.isfinite(scores), scores, 0.0)
        return SearchResult(ids=ids.tolist(), scores=finite.tolist())

    @bentoml.api(route="/items")
    def items(self, items: list[ItemIn]) -> AddedItems:
        """Add new items to the index (known ones are left as they are)."""
        try:
            done = self.catalog.upsert([ItemIn.model_validate(i) for i in items])
        except RequestError as exc:
            raise http_error(exc) from exc
        added = {item: int(self.model.encode([item])[0]) for item in done.added}
        return AddedItems(added=added, num_items=done.num_items)
