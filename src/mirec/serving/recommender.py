"""Recommendations for a batch of requests: lookup, user tower, faiss, fallbacks.

``Recommender.recommend_many`` serves several requests with one online lookup, one tower
forward pass and one faiss search (the entry service batches concurrent requests into it).
A user with a usable sequence gets the model's items; a user without one goes to the
``cold_start`` hook when it answers, otherwise to popularity. When the online store is down,
the last known sequence (or popularity) answers and the response says ``degraded: true``.

``VariantRouter`` is the seam for the canary: it picks the ``Recommender`` that serves a user.
``SingleVariant`` (everything to production) is the default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import faiss
import numpy as np

from mirec.index import search_interests
from mirec.serving.lookup import Lookup, ResilientHistories
from mirec.serving.model import ServingModel
from mirec.serving.popularity import Popularity
from mirec.serving.requests_log import RequestLog, new_request_id
from mirec.serving.schemas import (
    SOURCE_CACHED,
    SOURCE_COLD_START,
    SOURCE_MODEL,
    SOURCE_POPULARITY,
    RecommendRequest,
    RecommendResponse,
    RequestError,
    check_recommend,
)
from mirec.serving.settings import ServingSettings
from mirec.serving.timing import StageTimes

log = logging.getLogger(__name__)
PRODUCTION_VARIANT = "production"
# The user tower and the index search, replaceable by calls to separate services.
Encoder = Callable[[Sequence[Sequence[int]]], np.ndarray]  # histories -> [B, K, D]
Searcher = Callable[[np.ndarray, int, list[list[int]]], tuple[np.ndarray, np.ndarray]]


class ColdStart(Protocol):
    """Interest vectors for users without a usable sequence (the cold-start tower)."""

    def user_vectors(
        self, user_ids: Sequence[str], contexts: Sequence[dict[str, Any] | None]
    ) -> np.ndarray | None:
        """[B, K, D] vectors, or None when it cannot serve these users."""
        ...


@dataclass
class _Plan:
    """One validated request and what the lookup found for it."""

    req: RecommendRequest
    exclude: list[int]
    found: Lookup | None = None

    @property
    def history(self) -> list[int]:
        return [] if self.found is None or self.found.history is None else self.found.history


class Recommender:
    """Serves one model.

    Args:
        model: the loaded bundle and index.
        histories: the user lookup (never raises; flags degraded lookups).
        popularity: the fallback ranking.
        settings: limits and behaviour.
        requests: where served requests are remembered for feedback.
        cold_start: optional tower for users without history.
        variant: the label of this model in responses (``production`` / ``canary``).
        encoder: the user tower (default: the model's, in process).
        searcher: the index search (default: the model's index, in process).
    """

    def __init__(
        self,
        model: ServingModel,
        histories: ResilientHistories,
        popularity: Popularity,
        settings: ServingSettings | None = None,
        requests: RequestLog | None = None,
        cold_start: ColdStart | None = None,
        variant: str = PRODUCTION_VARIANT,
        encoder: Encoder | None = None,
        searcher: Searcher | None = None,
    ) -> None:
        self.model = model
        self.histories = histories
        self.popularity = popularity
        self.settings = settings or ServingSettings()
        self.requests = requests or RequestLog(self.settings.remembered_requests)
        self.cold_start = cold_start
        self.variant = variant
        self.encoder: Encoder = encoder or model.user_vectors
        self.searcher: Searcher = searcher or self._search_local

    def recommend(self, req: RecommendRequest) -> RecommendResponse:
        """One request; raises RequestError for a refused request."""
        (result,), _ = self.recommend_many([req])
        if isinstance(result, RequestError):
            raise result
        return result

    def recommend_many(
        self, reqs: Sequence[RecommendRequest]
    ) -> tuple[list[RecommendResponse | RequestError], StageTimes]:
        """Serve a batch; a refused request yields its RequestError in its slot."""
        times = StageTimes(size=len(reqs))
        results: list[RecommendResponse | RequestError | None] = [None] * len(reqs)
        plans: dict[int, _Plan] = {}
        with times.stage("validate"):
            for row, req in enumerate(reqs):
                try:
                    plans[row] = self._plan(req)
                except RequestError as exc:
                    results[row] = exc
        with times.stage("lookup"):
            users = list(dict.fromkeys(p.req.user_id for p in plans.values()))
            found = self.histories.lookup(users) if users else {}
            for plan in plans.values():
                plan.found = found[plan.req.user_id]
        for row, response in self._serve(plans, times).items():
            results[row] = response
        return [r for r in results if r is not None], times

    def _plan(self, req: RecommendRequest) -> _Plan:
        check_recommend(req, self.settings)
        if not req.exclude:
            return _Plan(req, [])
        idx = self.model.encode(req.exclude)
        unknown = [item for item, i in zip(req.exclude, idx, strict=True) if i < 0]
        if unknown:
            raise RequestError(f"exclude has unknown item ids: {unknown[:10]}")
        return _Plan(req, [int(i) for i in idx])

    def _serve(
        self, plans: dict[int, _Plan], times: StageTimes
    ) -> dict[int, RecommendResponse | RequestError]:
        out: dict[int, RecommendResponse | RequestError] = {}
        with_model: list[int] = []
        without: list[int] = []
        for row, plan in plans.items():
            found = plan.found
            assert found is not None
            usable = None if found.history is None else self.model.known_history(found.history)
            plan.found = Lookup(usable, found.degraded, found.cached)
            (with_model if usable else without).append(row)
        out.update(self._from_model([plans[r] for r in with_model], with_model, times))
        out.update(self._without_history([plans[r] for r in without], without, times))
        return out

    def _from_model(
        self, plans: list[_Plan], rows: list[int], times: StageTimes
    ) -> dict[int, RecommendResponse]:
        if not plans:
            return {}
        responses: dict[int, RecommendResponse] = {}
        if self.model.index_serves:
            with times.stage("tower"):
                vecs = self.encoder([p.history for p in plans])
            with times.stage("faiss"):
                ids, scores = self._search(vecs, plans)
        else:  # ItemKNN: its scores are not an inner product, so no index ranks them
            with times.stage("tower"):
                k = max(p.req.k for p in plans)
                histories = [p.history for p in plans]
                ids, scores = self.model.exact_top(
                    histories, k, [h + p.exclude for h, p in zip(histories, plans, strict=True)]
                )
        with times.stage("respond"):
            for row, plan, top, score in zip(rows, plans, ids, scores, strict=True):
                assert plan.found is not None
                source = SOURCE_CACHED if plan.found.cached else SOURCE_MODEL
                responses[row] = self._respond(plan, top, score, source)
        return responses

    def _search(self, vecs: np.ndarray, plans: list[_Plan]) -> tuple[np.ndarray, np.ndarray]:
        k = max(p.req.k for p in plans)
        return self.searcher(vecs, k, [p.history + p.exclude for p in plans])

    def _search_local(
        self, vecs: np.ndarray, k: int, exclude: list[list[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        pin_faiss_threads(self.settings.faiss_threads)
        return search_interests(self.model.index, vecs, k, exclude=exclude)

    def _without_history(
        self, plans: list[_Plan], rows: list[int], times: StageTimes
    ) -> dict[int, RecommendResponse | RequestError]:
        out: dict[int, RecommendResponse | RequestError] = {}
        if not plans:
            return out
        unknown = [p.found is not None and p.found.history is None for p in plans]
        if self.settings.unknown_users == "reject":
            for row, plan, missing in zip(rows, plans, unknown, strict=True):
                if missing and not plan.found.degraded:  # type: ignore[union-attr]
                    out[row] = RequestError(f"unknown user_id {plan.req.user_id!r}", status=404)
        rest = [(r, p) for r, p in zip(rows, plans, strict=True) if r not in out]
        vecs = None
        if self.cold_start is not None and rest:
            with times.stage("tower"):
                vecs = self.cold_start.user_vectors(
                    [p.req.user_id for _, p in rest], [p.req.context for _, p in rest]
                )
        with times.stage("faiss"):
            for i, (row, plan) in enumerate(rest):
                if vecs is not None:
                    top, score = self._search(vecs[i : i + 1], [plan])
                    out[row] = self._respond(plan, top[0], score[0], SOURCE_COLD_START)
                else:
                    top1, score1 = self.popularity.top(plan.req.k, plan.history + plan.exclude)
                    out[row] = self._respond(plan, top1, score1, SOURCE_POPULARITY)
        return out

    def _respond(
        self, plan: _Plan, top: np.ndarray, scores: np.ndarray, source: str
    ) -> RecommendResponse:
        k = plan.req.k
        keep = top[:k] >= 0
        items = [i for i in self.model.decode(top[:k][keep]) if i is not None]
        request_id = new_request_id()
        self.requests.add(request_id, plan.req.user_id, items, self.model.version, self.variant)
        return RecommendResponse(
            items=items,
            scores=[round(float(s), 6) for s in scores[:k][keep]],
            model_version=self.model.version,
            request_id=request_id,
            degraded=bool(plan.found is not None and plan.found.degraded),
            source=source,
            variant=self.variant,
        )


def pin_faiss_threads(threads: int) -> None:
    """Give the calling thread ``threads`` OpenMP threads for faiss.

    OpenMP's thread count is per calling thread: a count set at start-up does not reach the
    batch thread, which would otherwise search with one thread per core.
    """
    if faiss.omp_get_max_threads() != threads:
        faiss.omp_set_num_threads(threads)


class VariantRouter(Protocol):
    """Chooses the Recommender that serves a user (the canary split plugs in here)."""

    def route(self, user_id: str) -> Recommender:
        """The variant for ``user_id``."""
        ...

    def variants(self) -> list[Recommender]:
        """Every variant currently served."""
        ...


class SingleVariant:
    """Every user to one Recommender (production only, no canary)."""

    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender

    def route(self, user_id: str) -> Recommender:
        """Always the one Recommender."""
        return self.recommender

    def variants(self) -> list[Recommender]:
        """The one Recommender."""
        return [self.recommender]


def recommend_routed(
    router: VariantRouter, reqs: Sequence[RecommendRequest]
) -> tuple[list[RecommendResponse | RequestError], list[tuple[Recommender, StageTimes]]]:
    """Split a batch by variant, serve each part, and put the answers back in request order."""
    groups: dict[int, tuple[Recommender, list[int]]] = {}
    for row, req in enumerate(reqs):
        rec = router.route(req.user_id)
        groups.setdefault(id(rec), (rec, []))[1].append(row)
    results: list[RecommendResponse | RequestError | None] = [None] * len(reqs)
    timings: list[tuple[Recommender, StageTimes]] = []
    for rec, rows in groups.values():
        answers, times = rec.recommend_many([reqs[r] for r in rows])
        timings.append((rec, times))
        for row, answer in zip(rows, answers, strict=True):
            results[row] = answer
    return [r for r in results if r is not None], timings
