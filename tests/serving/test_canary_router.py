"""Production and canary side by side over a real registry, Feast repository and event store.

Two registered versions (production v1, canary v2), a SQLite event store, the canary
controller: every answer names its variant and version and matches the sticky split; weight,
promote and rollback apply without a restart while requests keep flowing, none failing; a
canary that fails to load or raises sends its traffic to production and the event is recorded;
clicks count for their impression's arm; decisions are logged and a restart resumes them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirec.errors import BundleMismatchError
from mirec.registry import CANARY, Registry
from mirec.registry.canary_log import CanaryLog
from mirec.serving.app import ServingApp
from mirec.serving.canary.controller import CanaryController
from mirec.serving.canary.policy import PolicyConfig
from mirec.serving.canary.split import SplitStore, assign_variant
from mirec.serving.events import EventStore, open_event_store
from mirec.serving.model import ServingModel, load_stage
from mirec.serving.schemas import FeedbackRequest, RecommendRequest
from tests.serving.conftest import Deployment

pytestmark = [pytest.mark.integration, pytest.mark.serving, pytest.mark.feast, pytest.mark.spark]


@pytest.fixture()
def registry(deployment: Deployment, tmp_path: Path) -> Iterator[Registry]:
    """A copy of the deployment's registry state with v2 (same bundle) as the canary."""
    reg = Registry(deployment.registry_root)
    production = reg.stage("production")
    assert production is not None
    bundle = reg.bundle_path(production.version)
    entry = reg.register(bundle, metrics={}, data_fingerprint=f"canary-{tmp_path.name}",
                         config={"canary": tmp_path.name}, code_version="tests",
                         lineage=dict(production.lineage))  # fmt: skip
    reg.set_stage(CANARY, entry.version)
    SplitStore(reg.root).set_weight(0.5)
    yield reg
    if reg.stage(CANARY) is not None:
        reg.clear_canary()
    if reg.stage("production").version != production.version:  # type: ignore[union-attr]
        reg.set_stage("production", production.version)
    for name in ("canary_split.json", "canary_decisions.jsonl", "canary_events.jsonl"):
        (reg.root / name).unlink(missing_ok=True)


def _serving(registry: Registry, store: EventStore, **kw: object) -> CanaryController:
    app = ServingApp.from_registry(registry.root, sink=store)
    return CanaryController(app, registry, store, interval_s=0.2, **kw)  # type: ignore[arg-type]


def _users(deployment: Deployment) -> list[str]:
    return sorted(deployment.dataset.events["user_id"].astype(str).unique())


def test_both_arms_served_stickily_with_their_versions(
    deployment: Deployment, registry: Registry, tmp_path: Path
) -> None:
    store = open_event_store(tmp_path / "events.db")
    ctl = _serving(registry, store)
    split = ctl.router.arms.split
    canary_version = f"v{registry.stage(CANARY).version}"  # type: ignore[union-attr]
    seen = {}
    for user in _users(deployment):
        answer = ctl.app.recommend(RecommendRequest(user_id=user, k=5))
        expected = assign_variant(user, split.weight, split.salt)
        assert answer.variant == expected
        assert answer.model_version == (canary_version if expected == "canary" else "v1")
        seen[user] = answer
    assert {a.variant for a in seen.values()} == {"production", "canary"}
    user, answer = next((u, a) for u, a in seen.items() if a.variant == "canary")
    ctl.app.feedback.record(FeedbackRequest(request_id=answer.request_id, item_id=answer.items[0]))
    assert ctl.app.feedback.requests.get(answer.request_id) is not None
    counts = store.counts()
    assert counts.arm("canary", canary_version).clicks == 1
    assert counts.arm("production", "v1").clicks == 0
    ctl.tracker.refresh()  # type: ignore[union-attr]
    assert ctl.tracker.counts(("canary", canary_version)).clicks == 1  # type: ignore[union-attr]


def test_weight_promote_and_rollback_take_effect_without_a_failed_request(
    deployment: Deployment, registry: Registry, tmp_path: Path
) -> None:
    store = open_event_store(tmp_path / "events.db")
    ctl = _serving(registry, store)
    users = _users(deployment)
    failures: list[BaseException] = []
    served: list[tuple[str, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            try:
                answer = ctl.app.recommend(RecommendRequest(user_id=users[i % len(users)], k=5))
                served.append((answer.variant, answer.model_version))
            except BaseException as exc:  # noqa: BLE001 - every failure is the finding
                failures.append(exc)
            i += 1

    def flow(more: int = 30) -> None:  # let the traffic thread serve the new state
        target = len(served) + len(failures) + more
        while len(served) + len(failures) < target:
            stop.wait(0.01)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        flow()
        ctl.set_weight(0.0)
        assert all(ctl.router.route(u).variant == "production" for u in users)
        flow()
        ctl.set_weight(1.0)
        assert all(ctl.router.route(u).variant == "canary" for u in users)
        flow()
        canary = f"v{registry.stage(CANARY).version}"  # type: ignore[union-attr]
        assert ctl.promote() == canary
        assert registry.stage("production").version == int(canary[1:])  # type: ignore[union-attr]
        assert ctl.router.arms.canary is None and ctl.app.model.version == canary
        flow()
        label = ctl.rollback()  # no canary left: production goes back to v1
        assert "v1" in label and ctl.router.arms.production.model.version == "v1"
        flow()
    finally:
        stop.set()
        thread.join()
    assert not failures
    assert {("production", "v1"), ("canary", canary), ("production", canary)} <= set(served)
    kinds = [e["kind"] for e in CanaryLog(registry.root).events()]
    assert {"weight", "promoted", "rolled_back"} <= set(kinds)


def test_canary_that_fails_to_load_or_raises_goes_to_production(
    deployment: Deployment, registry: Registry, tmp_path: Path
) -> None:
    store = open_event_store(tmp_path / "events.db")

    def broken(reg: Registry, stage: str) -> ServingModel:
        if stage == CANARY:
            raise BundleMismatchError("canary bundle refused (test)")
        return load_stage(reg, stage)

    ctl = _serving(registry, store, loader=broken)
    assert ctl.router.arms.canary is None
    users = _users(deployment)
    assert {ctl.app.recommend(RecommendRequest(user_id=u, k=3)).variant for u in users} == {
        "production"
    }
    assert "load_failed" in [e["kind"] for e in CanaryLog(registry.root).events()]

    ctl = _serving(registry, store)
    canary = ctl.router.arms.canary
    assert canary is not None

    def explode(histories: object) -> object:
        raise RuntimeError("canary tower crashed (test)")

    canary.encoder = explode  # type: ignore[assignment]
    answers = [ctl.app.recommend(RecommendRequest(user_id=u, k=3)) for u in users]
    assert {a.variant for a in answers} == {"production"}
    assert canary.meter.health().errors > 0
    assert "failover" in [e["kind"] for e in CanaryLog(registry.root).events()]


def test_policy_decides_from_stored_counts_and_resumes_after_a_restart(
    deployment: Deployment, registry: Registry, tmp_path: Path
) -> None:
    store = open_event_store(tmp_path / "events.db")
    config = PolicyConfig(min_impressions=50, min_guardrail_requests=10_000)
    ctl = _serving(registry, store, config=config)
    users = _users(deployment)
    for user in users * 2:
        answer = ctl.app.recommend(RecommendRequest(user_id=user, k=5))
        if answer.variant == "canary":  # the canary's first item is always clicked
            ctl.app.feedback.record(
                FeedbackRequest(request_id=answer.request_id, item_id=answer.items[0])
            )
    first = ctl.evaluate(apply=False)
    assert first is not None and first.canary.clicks > 0 and first.production.clicks == 0
    assert first.decision == "promote" and not first.applied
    logged = CanaryLog(registry.root).read()[-1]
    assert logged.p_value == first.p_value
    restarted = _serving(registry, open_event_store(tmp_path / "events.db"), config=config)
    again = restarted.evaluate(apply=True)
    assert again is not None
    assert (again.canary.impressions, again.canary.clicks) == (
        first.canary.impressions,
        first.canary.clicks,
    )
    assert again.p_value <= first.p_value and again.applied
    assert registry.stage(CANARY) is None
    assert restarted.router.arms.production.model.version == first.canary.model_version
