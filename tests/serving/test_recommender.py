"""The serving library over a real registry and Feast repository: recommend, feedback, items."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from mirec.serving.app import ServingApp
from mirec.serving.events import FeedbackEvent, open_event_store
from mirec.serving.schemas import (
    SOURCE_COLD_START,
    SOURCE_MODEL,
    SOURCE_POPULARITY,
    FeedbackRequest,
    ItemIn,
    RecommendRequest,
    RequestError,
)
from mirec.serving.settings import ServingSettings
from tests.serving.conftest import Deployment

pytestmark = [pytest.mark.integration, pytest.mark.feast, pytest.mark.spark]


@pytest.fixture
def app(deployment: Deployment) -> Iterator[ServingApp]:
    yield ServingApp.from_registry(deployment.registry_root, settings=ServingSettings(max_k=50))


def _user_with_history(app: ServingApp, deployment: Deployment, skip: int = 0) -> str:
    users = sorted(deployment.dataset.events["user_id"].astype(str).unique())
    found = app.histories.lookup(users)
    return [u for u in users if found[u].history][skip]


def test_recommend_serves_the_production_model(app: ServingApp, deployment: Deployment) -> None:
    user = _user_with_history(app, deployment)
    history = app.histories.lookup([user])[user].history or []
    seen = set(app.model.decode(np.asarray(history)))
    first = app.recommend(RecommendRequest(user_id=user, k=10))
    assert first.model_version == "v1" and first.source == SOURCE_MODEL and not first.degraded
    assert len(first.items) == 10 == len(set(first.items)) == len(first.scores)
    assert first.scores == sorted(first.scores, reverse=True)
    assert not seen & set(first.items)
    excluded = app.recommend(RecommendRequest(user_id=user, k=10, exclude=first.items[:3]))
    assert not set(first.items[:3]) & set(excluded.items)
    assert excluded.items[:7] == first.items[3:10]
    assert excluded.request_id != first.request_id


def test_batch_matches_single_requests(app: ServingApp, deployment: Deployment) -> None:
    users = [_user_with_history(app, deployment, i) for i in range(4)]
    reqs = [RecommendRequest(user_id=u, k=5) for u in users]
    batch = [answer for answer, _ in app.recommend_batch(reqs)]
    single = [app.recommend(r) for r in reqs]
    assert [b.items for b in batch] == [s.items for s in single]  # type: ignore[union-attr]


def test_unknown_user_gets_popularity(app: ServingApp) -> None:
    got = app.recommend(RecommendRequest(user_id="nobody-at-all", k=5))
    assert got.source == SOURCE_POPULARITY and len(got.items) == 5
    counts = app.router.route("x").popularity.counts
    idx = app.model.encode(got.items)
    assert list(counts[idx]) == sorted(counts[idx], reverse=True)


class _Centroid:
    """A cold-start tower stand-in: the mean item vector as the one interest."""

    def __init__(self, app: ServingApp) -> None:
        self.vec = app.model.item_vectors(np.arange(1, app.model.vocab_size + 1)).mean(axis=0)

    def user_vectors(
        self, user_ids: Sequence[str], contexts: Sequence[dict[str, Any] | None]
    ) -> np.ndarray:
        return np.tile(self.vec, (len(user_ids), 1, 1)).astype(np.float32)


def test_cold_start_hook_serves_users_without_history(
    app: ServingApp, deployment: Deployment
) -> None:
    app.router.route("x").cold_start = _Centroid(app)
    got = app.recommend(RecommendRequest(user_id="brand-new", k=5, context={"country": "fr"}))
    assert got.source == SOURCE_COLD_START and len(got.items) == 5


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"k": 5}, "user_id"),
        ({"user_id": "1", "k": "5"}, "k"),
        ({"user_id": 7, "k": 5}, "user_id"),
        ({"user_id": "1", "k": 5, "exclude": "a"}, "exclude"),
        ({"user_id": "1", "k": 5, "colour": "red"}, "colour"),
    ],
)
def test_malformed_requests_name_the_field(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        RecommendRequest.model_validate(body)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("req", "needle"),
    [
        ({"k": 0}, "k must be a positive integer"),
        ({"k": -3}, "k must be a positive integer"),
        ({"k": 51}, "at most 50"),
        ({"k": 5, "exclude": ["no-such-item"]}, "unknown item ids: ['no-such-item']"),
    ],
)
def test_refused_requests_say_why(app: ServingApp, req: dict[str, Any], needle: str) -> None:
    with pytest.raises(RequestError) as err:
        app.recommend(RecommendRequest(user_id="1", **req))
    assert err.value.status == 400 and needle in str(err.value)


def test_reject_mode_answers_404_for_unknown_users(deployment: Deployment) -> None:
    strict = ServingApp.from_registry(
        deployment.registry_root, settings=ServingSettings(unknown_users="reject")
    )
    with pytest.raises(RequestError) as err:
        strict.recommend(RecommendRequest(user_id="nobody", k=3))
    assert err.value.status == 404 and "nobody" in str(err.value)


def test_click_is_pushed_and_changes_the_next_recommendation(
    app: ServingApp, deployment: Deployment
) -> None:
    user = _user_with_history(app, deployment, 5)
    before = app.recommend(RecommendRequest(user_id=user, k=10))
    clicked = before.items[-1]
    ack = app.feedback.record(FeedbackRequest(request_id=before.request_id, item_id=clicked))
    assert ack.pushed and ack.position == 9 and ack.user_id == user and ack.model_version == "v1"
    fresh = ServingApp.from_registry(deployment.registry_root)  # reads the online store again
    history = fresh.histories.lookup([user])[user].history or []
    assert history[-1] == int(app.model.encode([clicked])[0])
    after = fresh.recommend(RecommendRequest(user_id=user, k=10))
    assert clicked not in after.items and after.items != before.items


def test_feedback_refuses_unknown_requests_and_items(app: ServingApp) -> None:
    with pytest.raises(RequestError) as err:
        app.feedback.record(FeedbackRequest(request_id="f" * 32, item_id="1"))
    assert err.value.status == 404 and "unknown request_id" in str(err.value)
    served = app.recommend(RecommendRequest(user_id="nobody", k=3))
    missing = next(i for i in map(str, range(1, 200)) if i not in served.items)
    with pytest.raises(RequestError) as err:
        app.feedback.record(FeedbackRequest(request_id=served.request_id, item_id=missing))
    assert err.value.status == 400 and "was not in the response" in str(err.value)


class _CountingStore:
    """A real SQLite event store that counts its appends (one durable write each)."""

    def __init__(self, path: Path) -> None:
        self.store = open_event_store(path)
        self.appends: list[int] = []

    def append(self, events: Sequence[FeedbackEvent]) -> object:
        self.appends.append(len(events))
        return self.store.append(events)

    def clicks(self) -> list[tuple[str, str, int]]:
        frame = self.store.read_events()
        rows = frame[frame["event_type"] == "click"]
        return [(str(r.user_id), str(r.item_id), int(r.position)) for r in rows.itertuples()]


def test_feedback_batch_is_one_append_and_one_push_in_order(
    deployment: Deployment, tmp_path: Path
) -> None:
    sink = _CountingStore(tmp_path / "events.db")
    app = ServingApp.from_registry(deployment.registry_root, sink=sink)
    users = [_user_with_history(app, deployment, i) for i in (6, 7)]
    first, second = (app.recommend(RecommendRequest(user_id=u, k=10)) for u in users)
    picks = [(first, 2), (second, 0), (first, 7), (first, 5), (second, 9)]
    sink.appends.clear()  # the impressions of the two answers
    acks = app.feedback.record_many(
        [FeedbackRequest(request_id=a.request_id, item_id=a.items[pos]) for a, pos in picks]
    )
    assert sink.appends == [5]  # the whole batch in one durable write
    assert [(a.user_id, a.position, a.pushed) for a in acks] == [
        (users[0], 2, True), (users[1], 0, True), (users[0], 7, True),
        (users[0], 5, True), (users[1], 9, True),
    ]  # fmt: skip
    stored = sorted(sink.clicks())
    assert stored == sorted((a.user_id, a.item_id, a.position) for a in acks)
    fresh = ServingApp.from_registry(deployment.registry_root)  # reads the online store again
    online = fresh.histories.lookup(users)
    expect_first = list(app.model.encode([first.items[p] for p in (2, 7, 5)]))
    expect_second = list(app.model.encode([second.items[p] for p in (0, 9)]))
    assert (online[users[0]].history or [])[-3:] == expect_first
    assert (online[users[1]].history or [])[-2:] == expect_second


def test_feedback_batch_is_all_or_nothing(deployment: Deployment, tmp_path: Path) -> None:
    sink = _CountingStore(tmp_path / "events.db")
    settings = ServingSettings(max_feedback_batch=3)
    app = ServingApp.from_registry(deployment.registry_root, settings=settings, sink=sink)
    served = app.recommend(RecommendRequest(user_id="nobody", k=3))
    missing = next(i for i in map(str, range(1, 200)) if i not in served.items)
    good = FeedbackRequest(request_id=served.request_id, item_id=served.items[0])
    bad_item = FeedbackRequest(request_id=served.request_id, item_id=missing)
    unknown = FeedbackRequest(request_id="e" * 32, item_id=served.items[1])
    for batch, status, needle in [
        ([good, bad_item], 400, "events[1]: item_id"),
        ([good, good, unknown], 404, "events[2]: unknown request_id"),
        ([good] * 4, 413, "events holds 4 events; at most 3"),
    ]:
        with pytest.raises(RequestError) as err:
            app.feedback.record_many(batch)
        assert err.value.status == status and needle in str(err.value)
    assert sink.clicks() == []  # nothing of a refused batch was stored


def test_new_item_is_retrievable_without_retraining(
    app: ServingApp, deployment: Deployment
) -> None:
    user = _user_with_history(app, deployment, 2)
    before = app.recommend(RecommendRequest(user_id=user, k=5))
    added = app.items.upsert([ItemIn(item_id="fresh-item", similar_to=before.items[:2])])
    assert added.added == ["fresh-item"] and added.num_items == app.model.vocab_size + 1
    after = app.recommend(RecommendRequest(user_id=user, k=5))
    assert "fresh-item" in after.items
    again = app.items.upsert([ItemIn(item_id="fresh-item", attributes=["colour=red"])])
    assert again.updated == ["fresh-item"] and again.num_items == added.num_items
    with pytest.raises(RequestError, match="similar_to"):
        app.items.upsert([ItemIn(item_id="lonely")])
    with pytest.raises(RequestError, match="unknown item ids"):
        app.items.upsert([ItemIn(item_id="odd", similar_to=["not-an-item"])])


def _floor_registry(deployment: Deployment, name: str, root: Path) -> tuple[Path, Path]:
    """A registry whose production model is the ``name`` floor, trained and indexed."""
    from mirec.config import from_dict
    from mirec.training import train
    from tests.serving.conftest import TRAIN_CONFIG, _index_bundle, register_production

    cfg = from_dict({**TRAIN_CONFIG, "model": {"name": name}})
    result = train(cfg, deployment.dataset, root / "run", vocab=deployment.vocab, progress=False)
    _index_bundle(result.bundle_dir)
    bundle = register_production(root / "registry", result, cfg, deployment.repo)
    return root / "registry", bundle


@pytest.mark.parametrize("name", ["itemknn", "popularity"])
def test_the_floors_serve_their_exact_ranking(
    deployment: Deployment, tmp_path: Path, name: str
) -> None:
    from mirec.bundle import ModelBundle

    registry, bundle_dir = _floor_registry(deployment, name, tmp_path)
    app = ServingApp.from_registry(registry)
    user = _user_with_history(app, deployment)
    history = app.histories.lookup([user])[user].history or []
    got = app.recommend(RecommendRequest(user_id=user, k=10))
    assert got.source == SOURCE_MODEL and len(got.items) == 10
    bundle = ModelBundle.load(bundle_dir)
    scores = bundle.score_users([history])[0]
    scores[[0, *history]] = -np.inf
    expected = app.model.decode(np.argsort(-scores, kind="stable")[:10])
    assert got.scores == sorted(got.scores, reverse=True)
    # ties may order differently; the scores of what is served are the best ten
    assert np.allclose(sorted(scores[app.model.encode(got.items)])[::-1], got.scores, atol=1e-5)
    assert np.allclose(got.scores, np.sort(scores)[::-1][:10], atol=1e-5)
    if name == "itemknn":
        assert set(got.items) & set(expected) and not set(got.items) & set(
            app.model.decode(np.asarray(history))
        )
