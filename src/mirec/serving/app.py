"""One served model, wired: registry -> model, Feast lookup, popularity, router, feedback, items.

``ServingApp.from_registry`` is what every BentoML service (and ``mirec serve``) builds at
start-up; tests build it the same way. ``recommend_batch`` is the function the entry service
hands to its ``MicroBatcher``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import torch

from mirec.errors import ConfigError
from mirec.registry import PRODUCTION, Registry
from mirec.serving.feedback import (
    EventSink,
    FeastClickPush,
    FeedbackHandler,
    SequencePush,
    impressions,
)
from mirec.serving.items import FeastItemFeatures, ItemCatalog
from mirec.serving.lookup import FeastHistories, HistorySource, ResilientHistories
from mirec.serving.model import ServingModel, load_stage
from mirec.serving.popularity import Popularity
from mirec.serving.recommender import (
    ColdStart,
    Encoder,
    Recommender,
    Searcher,
    SingleVariant,
    VariantRouter,
    recommend_routed,
)
from mirec.serving.requests_log import RequestLog
from mirec.serving.schemas import RecommendRequest, RecommendResponse, RequestError
from mirec.serving.settings import ServingSettings
from mirec.serving.timing import StageTimes

log = logging.getLogger(__name__)
FEATURE_REPO_ENV = "MIREC_FEATURE_REPO"  # overrides the feature repo recorded in the lineage


@dataclass
class ServingApp:
    """Everything the entry service needs for one model."""

    model: ServingModel
    histories: ResilientHistories
    router: VariantRouter
    feedback: FeedbackHandler
    items: ItemCatalog
    settings: ServingSettings
    sink: EventSink | None = None

    @classmethod
    def from_registry(
        cls,
        registry_root: str | Path | None = None,
        *,
        stage: str = PRODUCTION,
        feature_repo: str | Path | None = None,
        settings: ServingSettings | None = None,
        sink: EventSink | None = None,
        cold_start: ColdStart | None = None,
    ) -> ServingApp:
        """Load the model in ``stage`` and connect it to its feature repository."""
        model = load_stage(Registry(registry_root), stage)
        return cls.for_model(
            model, feature_repo=feature_repo, settings=settings, sink=sink, cold_start=cold_start
        )

    @classmethod
    def for_model(
        cls,
        model: ServingModel,
        *,
        feature_repo: str | Path | None = None,
        settings: ServingSettings | None = None,
        sink: EventSink | None = None,
        cold_start: ColdStart | None = None,
        encoder: Encoder | None = None,
        searcher: Searcher | None = None,
    ) -> ServingApp:
        """Connect a loaded model to its feature repository (argument, env, or lineage)."""
        repo = feature_repo or os.environ.get(FEATURE_REPO_ENV) or model.feature_repo
        if not repo:
            raise ConfigError(
                f"model {model.version} records no feature repository: pass one explicitly"
            )
        feast = FeastHistories(repo)
        return cls.build(
            model,
            feast,
            Popularity.from_feature_repo(repo, model.vocab_size),
            settings=settings,
            sink=sink,
            cold_start=cold_start,
            push=FeastClickPush(repo),
            item_store=feast.store,
            encoder=encoder,
            searcher=searcher,
        )

    @classmethod
    def build(
        cls,
        model: ServingModel,
        source: HistorySource,
        popularity: Popularity,
        *,
        settings: ServingSettings | None = None,
        sink: EventSink | None = None,
        cold_start: ColdStart | None = None,
        push: SequencePush | None = None,
        item_store: object | None = None,
        encoder: Encoder | None = None,
        searcher: Searcher | None = None,
    ) -> ServingApp:
        """Wire the parts around a loaded model and a history source.

        ``encoder`` / ``searcher`` replace the in-process user tower / index search (the
        composed service passes calls to the separate tower services).
        """
        settings = settings or ServingSettings()
        torch.set_num_threads(settings.torch_threads)
        faiss.omp_set_num_threads(settings.faiss_threads)
        histories = ResilientHistories(source, settings.cache_users, settings.lookup_retry_s)
        requests = RequestLog(settings.remembered_requests)
        recommender = Recommender(
            model,
            histories,
            popularity,
            settings,
            requests,
            cold_start=cold_start,
            encoder=encoder,
            searcher=searcher,
        )
        features = FeastItemFeatures(item_store) if item_store is not None else None
        return cls(
            model=model,
            histories=histories,
            router=SingleVariant(recommender),
            feedback=FeedbackHandler(
                requests,
                model,
                histories,
                sink=sink,
                push=push,
                max_batch=settings.max_feedback_batch,
            ),
            items=ItemCatalog(model, features),
            settings=settings,
            sink=sink,
        )

    def recommend_batch(
        self, reqs: Sequence[RecommendRequest]
    ) -> list[tuple[RecommendResponse | RequestError, StageTimes]]:
        """Serve a batch; each answer comes with its batch's stage times."""
        answers, timings = recommend_routed(self.router, reqs)
        times = _merged(timings, len(reqs))
        if self.sink is not None:
            self._log_impressions(answers)
        return [(answer, times) for answer in answers]

    def recommend(self, req: RecommendRequest) -> RecommendResponse:
        """One request; raises RequestError when refused."""
        ((answer, _),) = self.recommend_batch([req])
        if isinstance(answer, RequestError):
            raise answer
        return answer

    def _log_impressions(self, answers: Sequence[RecommendResponse | RequestError]) -> None:
        assert self.sink is not None
        events = []
        for answer in answers:
            if isinstance(answer, RecommendResponse):
                served = self.feedback.requests.get(answer.request_id)
                if served is not None:
                    events.extend(impressions(served))
        if events:
            self.sink.append(events)


def _merged(timings: Sequence[tuple[Recommender, StageTimes]], size: int) -> StageTimes:
    merged = StageTimes(size=size)
    for _, times in timings:
        for stage, seconds in times.seconds.items():
            merged.seconds[stage] = merged.seconds.get(stage, 0.0) + seconds
    return merged
