"""Prometheus metrics of the entry services (exposed on ``/metrics`` with BentoML's own).

- ``mirec_requests_total{endpoint, model_version, variant, status}``: answered requests.
- ``mirec_request_seconds{endpoint, model_version}``: time inside the handler.
- ``mirec_stage_seconds{stage, model_version}``: per request, the time of each stage of its
  batch (validate, lookup, tower, faiss, respond) and ``queue`` (waiting for the batch).
- ``mirec_batch_size``: requests per served batch.
- ``mirec_degraded_total{model_version, source}``: responses flagged degraded.
"""

from __future__ import annotations

import bentoml

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

REQUESTS = bentoml.metrics.Counter(
    name="mirec_requests",
    documentation="answered requests by endpoint, model version, variant and HTTP status",
    labelnames=["endpoint", "model_version", "variant", "status"],
)
REQUEST_SECONDS = bentoml.metrics.Histogram(
    name="mirec_request_seconds",
    documentation="seconds inside the handler by endpoint and model version",
    labelnames=["endpoint", "model_version"],
    buckets=LATENCY_BUCKETS,
)
STAGE_SECONDS = bentoml.metrics.Histogram(
    name="mirec_stage_seconds",
    documentation="seconds per request spent in each serving stage",
    labelnames=["stage", "model_version"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = bentoml.metrics.Histogram(
    name="mirec_batch_size",
    documentation="requests per served batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
DEGRADED = bentoml.metrics.Counter(
    name="mirec_degraded",
    documentation="responses served without the online store (cache or popularity)",
    labelnames=["model_version", "source"],
)
