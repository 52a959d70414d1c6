"""The entry service over separate tower services (``bentoml.depends``), for comparison.

The same API as ``serving.service:Recommender``; the user tower and the index search run in
their own processes and are reached over BentoML's local sockets. The in-process service is
the default because it was faster on the 2-core machine (docs/serving.md).

    bentoml serve serving.composed:ComposedRecommender --host 127.0.0.1 --port 3000
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, cast

import bentoml
import numpy as np

from mirec.serving.schemas import ItemIn, ItemsResponse, RequestError
from mirec.serving.settings import ServingSettings
from serving import service
from serving.common import BodyLimit, http_error
from serving.item_tower import ItemTower
from serving.user_tower import UserTower


@bentoml.service(name="mirec_recommender_composed", workers=1, traffic={"timeout": 10})
class ComposedRecommender(service.EntryAPI):
    """Lookup, validation and fallbacks here; tower and search in the dependencies."""

    user_tower = bentoml.depends(UserTower)
    item_tower = bentoml.depends(ItemTower)

    def __init__(self) -> None:
        super().__init__()
        self.batcher.inline_when_idle = False  # the batch waits on the loop for its calls
        recommender = self.app.router.route("")
        recommender.encoder = self._encode
        recommender.searcher = self._search

    def _remote(self, call: Coroutine[Any, Any, Any]) -> Any:
        """Run a dependency call on the event loop from the batch thread and wait for it."""
        loop = self.batcher.loop
        assert loop is not None, "remote calls run inside a batch, after a request arrived"
        return asyncio.run_coroutine_threadsafe(call, loop).result()

    def _encode(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        lists = [list(h) for h in histories]
        vectors = self._remote(self.user_tower.to_async.encode(histories=lists))
        return np.asarray(vectors, dtype=np.float32)

    def _search(
        self, vecs: np.ndarray, k: int, exclude: list[list[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        found: Any = self._remote(
            self.item_tower.to_async.search(vectors=vecs.tolist(), k=k, exclude=exclude)
        )
        ids = np.asarray(found["ids"] if isinstance(found, dict) else found.ids, dtype=np.int64)
        raw = found["scores"] if isinstance(found, dict) else found.scores
        scores = np.where(ids >= 0, np.asarray(raw, dtype=np.float32), -np.inf)
        return ids, scores.astype(np.float32)

    @bentoml.api(route="/items")
    def items(self, items: list[ItemIn]) -> ItemsResponse:
        """Add items to the item tower's index and learn their indices here."""
        try:
            found: Any = self.item_tower.items(items=[i.model_dump() for i in items])
        except bentoml.exceptions.BentoMLException as exc:
            raise http_error(RequestError(str(exc))) from exc
        added = found["added"] if isinstance(found, dict) else found.added
        for item_id, idx in added.items():
            self.app.model.name_item(item_id, int(idx))
        known = [i.item_id for i in items if i.item_id not in added]
        total = found["num_items"] if isinstance(found, dict) else found.num_items
        return ItemsResponse(added=list(added), updated=known, num_items=int(total))


# the decorator returns a bentoml Service (typed as the class it wraps)
cast(Any, ComposedRecommender).add_asgi_middleware(
    BodyLimit, max_bytes=ServingSettings().max_body_bytes
)
