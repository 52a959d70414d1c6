"""The entry service (default, in-process composition): recommend, feedback, items, health.

One process holds the user tower, the index and the Feast reader; concurrent ``/recommend``
requests are batched into one lookup, one tower pass and one faiss search
(``mirec.serving.batching.MicroBatcher``). ``/healthz``, ``/readyz``, ``/metrics`` and the
Swagger UI (``/``) come from BentoML.

    BENTOML_HOME=... MIREC_REGISTRY=... bentoml serve serving.service:Recommender \\
        --host 127.0.0.1 --port 3000
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, cast

import bentoml

from mirec.serving.app import ServingApp
from mirec.serving.batching import MicroBatcher
from mirec.serving.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    ItemIn,
    ItemsResponse,
    RecommendRequest,
    RecommendResponse,
    RequestError,
)
from mirec.serving.settings import ServingSettings
from mirec.serving.timing import StageTimes
from serving import canary_metrics, metrics
from serving.canary_admin import attach_canary, mount_canary
from serving.common import BodyLimit, http_error, load_app, model_tag

MAX_BATCH_ENV = "MIREC_MAX_BATCH"  # requests per batch (1 switches batching off)
WORKERS = int(os.environ.get("MIREC_WORKERS", "1"))  # server processes (each loads the model)


def observe(
    app: ServingApp, answer: RecommendResponse | RequestError, times: StageTimes, queued: float
) -> None:
    """Record one answered recommendation in the Prometheus metrics."""
    version = app.model.version
    for stage, seconds in times.seconds.items():
        metrics.STAGE_SECONDS.labels(stage=stage, model_version=version).observe(seconds)
    metrics.STAGE_SECONDS.labels(stage="queue", model_version=version).observe(queued)
    if isinstance(answer, RequestError):
        status, variant = str(answer.status), "none"
    else:
        status, variant = "200", answer.variant
        if answer.degraded:
            metrics.DEGRADED.labels(model_version=version, source=answer.source).inc()
    metrics.REQUESTS.labels(
        endpoint="/recommend", model_version=version, variant=variant, status=status
    ).inc()


class EntryAPI:
    """The entry endpoints; the services below (and ``serving.composed``) declare them."""

    bundle = bentoml.models.BentoModel(model_tag())

    def __init__(self) -> None:
        self.app = load_app(self.bundle)
        self.canary = attach_canary(self.app)  # production + canary from the registry
        max_batch = int(os.environ.get(MAX_BATCH_ENV, "64"))
        self.batcher: MicroBatcher[RecommendRequest, Any] = MicroBatcher(
            self._serve_batch, max_batch
        )

    def _serve_batch(self, reqs: Sequence[RecommendRequest]) -> list[Any]:
        start = time.perf_counter()
        answers = self.app.recommend_batch(reqs)
        metrics.BATCH_SIZE.observe(len(reqs))
        return [(answer, times, start) for answer, times in answers]

    def __is_ready__(self) -> bool:
        return self.app.model.num_items > 0

    @bentoml.api(route="/recommend", input_spec=RecommendRequest, output_spec=RecommendResponse)
    async def recommend(self, **body: Any) -> RecommendResponse:
        """Top-k items for a user: ``{user_id, k, exclude?, context?}``."""
        arrived = time.perf_counter()
        with metrics.REQUEST_SECONDS.labels("/recommend", self.app.model.version).time():
            answer, times, started = await self.batcher.submit(RecommendRequest(**body))
        observe(self.app, answer, times, started - arrived)
        if isinstance(answer, RequestError):
            raise http_error(answer)
        canary_metrics.observe_recommend(answer, time.perf_counter() - arrived)
        return answer

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest, output_spec=FeedbackResponse)
    def feedback(self, **body: Any) -> FeedbackResponse:
        """An event on an item of an earlier response: ``{request_id, item_id, event}``."""
        version = self.app.model.version
        with metrics.REQUEST_SECONDS.labels("/feedback", version).time():
            try:
                ack = self.app.feedback.record(FeedbackRequest(**body))
            except RequestError as exc:
                metrics.REQUESTS.labels("/feedback", version, "none", str(exc.status)).inc()
                raise http_error(exc) from exc
        metrics.REQUESTS.labels("/feedback", version, "production", "200").inc()
        canary_metrics.observe_feedback(self.app, ack)
        return ack

    @bentoml.api(route="/items")
    def items(self, items: list[ItemIn]) -> ItemsResponse:
        """Add or update items: new ones join the index for the next request."""
        try:
            return self.app.items.upsert(items)
        except RequestError as exc:
            raise http_error(exc) from exc


@bentoml.service(name="mirec_recommender", workers=WORKERS, traffic={"timeout": 10})
class Recommender(EntryAPI):
    """Recommendations from the registry's production model, all in one process."""


# the decorator returns a bentoml Service (typed as the class it wraps)
cast(Any, Recommender).add_asgi_middleware(BodyLimit, max_bytes=ServingSettings().max_body_bytes)
mount_canary(Recommender)
