"""Production and canary side by side: the sticky split, hot swaps, and failover to production.

``CanaryRouter`` is the entry service's ``VariantRouter``. Its state (production arm, canary
arm, split) is one immutable ``Arms`` value replaced in a single assignment under a lock, so a
request routes on either the old state or the new one, never on a half-made one, and requests
already being served finish on the arm they started on: setting the weight, promoting and
rolling back need no restart and fail no request.

Each arm is a ``MeasuredArm``, a ``Recommender`` that counts its requests, errors, fallbacks
and latency (the guardrails). A canary arm that raises hands its requests to the current
production arm (answers say ``variant: production``) and the failover is recorded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mirec.serving.canary.policy import ArmHealth
from mirec.serving.canary.split import CANARY_ARM, PRODUCTION_ARM, SplitSettings, assign_variant
from mirec.serving.model import ServingModel
from mirec.serving.recommender import Recommender
from mirec.serving.schemas import (
    SOURCE_POPULARITY,
    RecommendRequest,
    RecommendResponse,
    RequestError,
)
from mirec.serving.timing import StageTimes

log = logging.getLogger(__name__)
LATENCY_WINDOW = 5_000  # latest per-request latencies kept for the p99


@dataclass
class ArmMeter:
    """Counters of one arm since it was loaded (thread-safe)."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe(self, served: int, errors: int, fallbacks: int, seconds: float) -> None:
        """One served batch: its size, failures, fallback answers and per-request seconds."""
        with self.lock:
            self.requests += served
            self.errors += errors
            self.fallbacks += fallbacks
            self.latencies.extend([seconds] * served)

    def health(self) -> ArmHealth:
        """The guardrail view of the counters."""
        with self.lock:
            p99 = float(np.percentile(list(self.latencies), 99)) * 1e3 if self.latencies else 0.0
            return ArmHealth(self.requests, self.errors, self.fallbacks, p99)


OnFailover = Callable[[str, int, BaseException], None]


class MeasuredArm(Recommender):
    """A ``Recommender`` of one arm that measures itself and, as canary, fails over.

    Args:
        base: the recommender whose lookup, popularity, settings and request log it shares.
        model: the model this arm serves.
        variant: ``production`` or ``canary``.
        production: for a canary arm, a callable giving the current production arm.
        on_failover: called with (model version, requests, error) after a failover.
    """

    def __init__(
        self,
        base: Recommender,
        model: ServingModel,
        variant: str,
        production: Callable[[], Recommender] | None = None,
        on_failover: OnFailover | None = None,
    ) -> None:
        same = model is base.model
        super().__init__(
            model,
            base.histories,
            base.popularity,
            base.settings,
            base.requests,
            cold_start=base.cold_start,
            variant=variant,
            encoder=base.encoder if same else None,
            searcher=base.searcher if same else None,
        )
        self.meter = ArmMeter()
        self.production = production
        self.on_failover = on_failover

    def recommend_many(
        self, reqs: Sequence[RecommendRequest]
    ) -> tuple[list[RecommendResponse | RequestError], StageTimes]:
        """Serve and measure; a canary that raises hands the batch to production."""
        start = time.perf_counter()
        try:
            answers, times = super().recommend_many(reqs)
        except Exception as exc:
            if self.production is None:
                raise
            self.meter.observe(len(reqs), len(reqs), len(reqs), time.perf_counter() - start)
            log.exception("canary %s failed on %d requests: served by production",
                          self.model.version, len(reqs))  # fmt: skip
            if self.on_failover is not None:
                self.on_failover(self.model.version, len(reqs), exc)
            return self.production().recommend_many(reqs)
        fallbacks = sum(
            isinstance(a, RecommendResponse) and a.source == SOURCE_POPULARITY for a in answers
        )
        self.meter.observe(len(reqs), 0, fallbacks, time.perf_counter() - start)
        return answers, times


@dataclass(frozen=True)
class Arms:
    """The router's whole state; replaced, never changed."""

    production: MeasuredArm
    canary: MeasuredArm | None
    split: SplitSettings


class CanaryRouter:
    """Sticky per-user split between a production arm and an optional canary arm."""

    def __init__(self, production: MeasuredArm, split: SplitSettings) -> None:
        self._arms = Arms(production, None, split)
        self._lock = threading.Lock()

    @property
    def arms(self) -> Arms:
        """The current state (one consistent snapshot)."""
        return self._arms

    def route(self, user_id: str) -> Recommender:
        """The arm of ``user_id``: canary when one is loaded and the user's bucket says so."""
        arms = self._arms
        if arms.canary is not None and arms.split.weight > 0:
            if assign_variant(user_id, arms.split.weight, arms.split.salt) == CANARY_ARM:
                return arms.canary
        return arms.production

    def variants(self) -> list[Recommender]:
        """The arms now served."""
        arms = self._arms
        return [arms.production] if arms.canary is None else [arms.production, arms.canary]

    def current_production(self) -> Recommender:
        """Production now (the canary's failover target)."""
        return self._arms.production

    def replace(
        self,
        *,
        production: MeasuredArm | None = None,
        canary: MeasuredArm | None | bool = False,
        split: SplitSettings | None = None,
    ) -> Arms:
        """Swap parts of the state at once (``canary=None`` removes it, ``False`` keeps it)."""
        with self._lock:
            old = self._arms
            new_canary = old.canary if canary is False else canary
            assert new_canary is not True
            self._arms = Arms(production or old.production, new_canary, split or old.split)
            return self._arms

    def promote(self) -> Arms:
        """The canary arm becomes production in one swap (no reload)."""
        with self._lock:
            old = self._arms
            if old.canary is None:
                raise RequestError("no canary is loaded", status=409)
            promoted = MeasuredArm(old.production, old.canary.model, PRODUCTION_ARM)
            self._arms = Arms(promoted, None, old.split)
            return self._arms
