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
    FeedbackBatchRequest,
    FeedbackBatchResponse,
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
INLINE_ENV = "MIREC_INLINE_WHEN_IDLE"  # "0": every batch on the batch thread, also a lone one
WORKERS = int(os.environ.get("MIREC_WORKERS", "1"))  # server processes (each loads the model)
# BentoML's per-request access log line and OpenTelemetry span of /recommend cost the event
# loop ~0.1 and ~0.4 ms per request (docs/serving.md): off unless asked for. The counters and
# histograms on /metrics stay.
ACCESS_LOG = os.environ.get("MIREC_ACCESS_LOG", "0") == "1"
TRACE_RECOMMEND = os.environ.get("MIREC_TRACE_RECOMMEND", "0") == "1"
# Sync endpoints (/feedback, /items) run on a pool of this many threads: with BentoML's default
# of 1 concurrent clicks never meet in the event store's group commit and the grouped Feast push.
THREADS = int(os.environ.get("MIREC_THREADS", "16"))
SERVICE_CONFIG: dict[str, Any] = {
    "workers": WORKERS,
    "threads": THREADS,
    "traffic": {"timeout": 10},
    "logging": {"access": {"enabled": ACCESS_LOG}},
    **({} if TRACE_RECOMMEND else {"tracing": {"excluded_urls": ["/recommend"]}}),
}


_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once (``labels`` costs a lock and a dict walk)."""
    key = (id(metric), labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


def observe(
    app: ServingApp, answer: RecommendResponse | RequestError, times: StageTimes, queued: float
) -> None:
    """Record one answered recommendation in the Prometheus metrics."""
    version = app.model.version
    for stage, seconds in times.seconds.items():  # labels: stage, model_version
        _child(metrics.STAGE_SECONDS, stage, version).observe(seconds)
    _child(metrics.STAGE_SECONDS, "queue", version).observe(queued)
    if isinstance(answer, RequestError):
        status, variant = str(answer.status), "none"
    else:
        status, variant = "200", answer.variant
        if answer.degraded:
            _child(metrics.DEGRADED, version, answer.source).inc()
    # labels: endpoint, model_version, variant, status
    _child(metrics.REQUESTS, "/recommend", version, variant, status).inc()


class EntryAPI:
    """The entry endpoints; the services below (and ``serving.composed``) declare them."""

    bundle = bentoml.models.BentoModel(model_tag())

    def __init__(self) -> None:
        self.app = load_app(self.bundle)
        self.canary = attach_canary(self.app)  # production + canary from the registry
        max_batch = int(os.environ.get(MAX_BATCH_ENV, "64"))
        self.batcher: MicroBatcher[RecommendRequest, Any] = MicroBatcher(
            self._serve_batch,
            max_batch,
            inline_when_idle=os.environ.get(INLINE_ENV, "1") == "1",
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
        # BentoML validated the body against RecommendRequest already (input_spec)
        answer, times, started = await self.batcher.submit(RecommendRequest.model_construct(**body))
        handled = time.perf_counter()
        _child(metrics.REQUEST_SECONDS, "/recommend", self.app.model.version).observe(
            handled - arrived
        )
        observe(self.app, answer, times, started - arrived)
        if isinstance(answer, RequestError):
            raise http_error(answer)
        canary_metrics.observe_recommend(answer, handled - arrived)
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

    @bentoml.api(
        route="/feedback/batch", input_spec=FeedbackBatchRequest, output_spec=FeedbackBatchResponse
    )
    def feedback_batch(self, **body: Any) -> FeedbackBatchResponse:
        """Several events in one durable append: ``{events: [{request_id, item_id, event}]}``."""
        version = self.app.model.version
        with metrics.REQUEST_SECONDS.labels("/feedback/batch", version).time():
            try:
                acks = self.app.feedback.record_many(FeedbackBatchRequest(**body).events)
            except RequestError as exc:
                metrics.REQUESTS.labels("/feedback/batch", version, "none", str(exc.status)).inc()
                raise http_error(exc) from exc
        metrics.REQUESTS.labels("/feedback/batch", version, "production", "200").inc()
        for ack in acks:
            canary_metrics.observe_feedback(self.app, ack)
        return FeedbackBatchResponse(events=acks)

    @bentoml.api(route="/items")
    def items(self, items: list[ItemIn]) -> ItemsResponse:
        """Add or update items: new ones join the index for the next request."""
        try:
            return self.app.items.upsert(items)
        except RequestError as exc:
            raise http_error(exc) from exc


@bentoml.service(name="mirec_recommender", **SERVICE_CONFIG)
class Recommender(EntryAPI):
    """Recommendations from the registry's production model, all in one process."""


# the decorator returns a bentoml Service (typed as the class it wraps)
cast(Any, Recommender).add_asgi_middleware(BodyLimit, max_bytes=ServingSettings().max_body_bytes)
mount_canary(Recommender)
