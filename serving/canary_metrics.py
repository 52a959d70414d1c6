"""Prometheus metrics of the canary, by variant and model version (names in docs/canary.md).

- ``mirec_canary_impressions_total{variant, model_version}``: items served.
- ``mirec_canary_clicks_total{variant, model_version}``: clicks, counted for the arm of the
  impression they were made on (by request id).
- ``mirec_canary_requests_total{variant, model_version}``: answered recommendations.
- ``mirec_canary_fallbacks_total{variant, model_version}``: answers not from the arm's model
  (popularity).
- ``mirec_canary_request_seconds{variant, model_version}``: recommendation latency histogram.
- ``mirec_canary_weight``: the canary's share of users.
- ``mirec_canary_p_value``: the sequential test's always-valid p-value (1 without a canary).
"""

from __future__ import annotations

import bentoml

from mirec.registry import CanaryDecision
from mirec.serving.app import ServingApp
from mirec.serving.schemas import SOURCE_POPULARITY, FeedbackResponse, RecommendResponse
from serving.metrics import LATENCY_BUCKETS

ARM = ["variant", "model_version"]
IMPRESSIONS = bentoml.metrics.Counter(
    name="mirec_canary_impressions", documentation="items served by arm", labelnames=ARM
)
CLICKS = bentoml.metrics.Counter(
    name="mirec_canary_clicks", documentation="clicks by the arm of their impression",
    labelnames=ARM,
)  # fmt: skip
REQUESTS = bentoml.metrics.Counter(
    name="mirec_canary_requests", documentation="answered recommendations by arm", labelnames=ARM
)
FALLBACKS = bentoml.metrics.Counter(
    name="mirec_canary_fallbacks", documentation="popularity answers by arm", labelnames=ARM
)
LATENCY = bentoml.metrics.Histogram(
    name="mirec_canary_request_seconds", documentation="recommendation seconds by arm",
    labelnames=ARM, buckets=LATENCY_BUCKETS,
)  # fmt: skip
WEIGHT = bentoml.metrics.Gauge(name="mirec_canary_weight", documentation="canary share of users")
P_VALUE = bentoml.metrics.Gauge(
    name="mirec_canary_p_value", documentation="always-valid p-value of the canary's CTR test"
)


def observe_recommend(answer: RecommendResponse, seconds: float) -> None:
    """One answered recommendation."""
    arm = {"variant": answer.variant, "model_version": answer.model_version}
    REQUESTS.labels(**arm).inc()
    IMPRESSIONS.labels(**arm).inc(len(answer.items))
    LATENCY.labels(**arm).observe(seconds)
    if answer.source == SOURCE_POPULARITY:
        FALLBACKS.labels(**arm).inc()


def observe_feedback(app: ServingApp, ack: FeedbackResponse) -> None:
    """One recorded click, for the arm of the request it was made on."""
    served = app.feedback.requests.get(ack.request_id)
    if ack.event == "click" and served is not None:
        CLICKS.labels(variant=served.variant, model_version=served.model_version).inc()


def observe_decision(decision: CanaryDecision | None, weight: float) -> None:
    """The latest weight and p-value."""
    WEIGHT.set(weight)
    P_VALUE.set(1.0 if decision is None else decision.p_value)
