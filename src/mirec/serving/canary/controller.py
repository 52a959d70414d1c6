"""The canary in the server: the registry's stages served side by side, the policy on a schedule.

``CanaryController`` wraps a ``ServingApp``: it replaces the app's router with a
``CanaryRouter`` and keeps it in step with the registry (the production and canary stages and
the persisted split) on every ``sync``. ``set_weight``, ``promote`` and ``rollback`` change the
registry first (one atomic write each), then swap the served arms, so the server and the
registry never disagree for longer than one call. ``evaluate`` runs the policy on the stored
counts and applies its decision; ``start`` runs ``sync`` + ``evaluate`` every ``interval_s``
seconds on a background thread. A canary that cannot be loaded is recorded in the registry's
canary events and its traffic stays on production.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from mirec.errors import MirecError, RegistryError
from mirec.registry import CANARY, PRODUCTION, Registry
from mirec.registry.canary_log import CanaryDecision, CanaryLog
from mirec.serving.app import ServingApp
from mirec.serving.canary.offline import arm_counts, resumed_test
from mirec.serving.canary.policy import ArmHealth, PolicyConfig, decide
from mirec.serving.canary.router import CanaryRouter, MeasuredArm
from mirec.serving.canary.sequential import SequentialTest
from mirec.serving.canary.split import CANARY_ARM, PRODUCTION_ARM, SplitSettings, SplitStore
from mirec.serving.canary.tracker import Counts, CtrTracker, EventReader
from mirec.serving.model import ServingModel, load_stage, version_label
from mirec.serving.schemas import RequestError

log = logging.getLogger(__name__)
Loader = Callable[[Registry, str], ServingModel]


class CanaryController:
    """Production + canary from the registry, the split, the policy and its log.

    Args:
        app: the serving app of the production model (its router is replaced).
        registry: the registry whose stages are served.
        events: the event store the counts come from (None: the policy always holds).
        config: the policy's thresholds.
        interval_s: seconds between scheduled sync + evaluate rounds.
        loader: loads a stage's model (``load_stage``; tests pass a failing one).
    """

    def __init__(
        self,
        app: ServingApp,
        registry: Registry,
        events: EventReader | None = None,
        config: PolicyConfig | None = None,
        interval_s: float = 5.0,
        loader: Loader = load_stage,
    ) -> None:
        self.app = app
        self.registry = registry
        self.config = config or PolicyConfig()
        self.interval_s = interval_s
        self.loader = loader
        self.splits = SplitStore(registry.root)
        self.log = CanaryLog(registry.root)
        self.tracker = CtrTracker(events) if events is not None else None
        self.last_decision: CanaryDecision | None = None
        self.listeners: list[Callable[[CanaryDecision], object]] = []  # e.g. metrics
        self._tests: dict[tuple[str, str], SequentialTest] = {}
        self._lock = threading.RLock()  # one admin action / sync / evaluation at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        base = app.router.variants()[0]
        self.router = CanaryRouter(MeasuredArm(base, app.model, PRODUCTION_ARM), self.splits.load())
        app.router = self.router
        self.sync()

    # --- keeping the served arms in step with the registry -------------------------------

    def sync(self) -> None:
        """Serve what the registry says: production, canary (or none) and the split."""
        with self._lock:
            split = self.splits.load()
            if split != self.router.arms.split:
                self.router.replace(split=split)
            self._sync_production()
            self._sync_canary()

    def _sync_production(self) -> None:
        entry = self.registry.stage(PRODUCTION)
        arms = self.router.arms
        if entry is None or version_label(entry) == arms.production.model.version:
            return
        if arms.canary is not None and arms.canary.model.version == version_label(entry):
            self.router.promote()
        else:
            model = self.loader(self.registry, PRODUCTION)
            self.router.replace(production=MeasuredArm(arms.production, model, PRODUCTION_ARM))
        self._retarget(self.router.arms.production.model)
        log.info("now serving %s as production", version_label(entry))

    def _sync_canary(self) -> None:
        entry = self.registry.stage(CANARY)
        arms = self.router.arms
        loaded = None if arms.canary is None else arms.canary.model.version
        wanted = None if entry is None else version_label(entry)
        if wanted == loaded:
            return
        if wanted is None:
            self.router.replace(canary=None)
            log.info("canary %s removed: all traffic to production", loaded)
            return
        if self._failed_load == wanted:
            return
        try:
            model = self.loader(self.registry, CANARY)
        except (MirecError, OSError, RuntimeError) as exc:
            self._failed_load = wanted
            self.log.record_event("load_failed", model_version=wanted, error=str(exc))
            log.error("canary %s failed to load, its traffic stays on production: %s", wanted, exc)
            self.router.replace(canary=None)
            return
        canary = MeasuredArm(
            arms.production,
            model,
            CANARY_ARM,
            production=self.router.current_production,
            on_failover=self._record_failover,
        )
        self.router.replace(canary=canary)
        self.log.record_event("canary_loaded", model_version=wanted)
        log.info("canary %s loaded at weight %.3f", wanted, self.router.arms.split.weight)

    _failed_load: str | None = None

    def _record_failover(self, version: str, requests: int, exc: BaseException) -> None:
        self.log.record_event("failover", model_version=version, requests=requests, error=str(exc))

    def _retarget(self, model: ServingModel) -> None:
        """Feedback, items and labels of the app follow the production model."""
        self.app.model = model
        self.app.feedback.model = model
        self.app.items.model = model

    # --- admin actions ---------------------------------------------------------------------

    def set_weight(self, weight: float) -> SplitSettings:
        """Persist and apply the canary's share of users."""
        with self._lock:
            split = self.splits.set_weight(weight)
            self.router.replace(split=split)
            self.log.record_event("weight", weight=split.weight)
            return split

    def promote(self, reason: str = "admin") -> str:
        """Registry: canary -> production; then the canary arm serves as production."""
        with self._lock:
            self.sync()
            if self.router.arms.canary is None:
                raise RequestError("no canary is loaded to promote", status=409)
            promoted = self.registry.promote_canary()
            self.sync()
            self.log.record_event("promoted", model_version=f"v{promoted.version}", reason=reason)
            return f"v{promoted.version}"

    def rollback(self, reason: str = "admin") -> str:
        """Remove the canary when there is one, else restore the previous production."""
        with self._lock:
            self.sync()
            canary = self.registry.stage(CANARY)
            try:
                if canary is not None:
                    self.registry.clear_canary()
                    label = f"canary v{canary.version} removed"
                else:
                    restored = self.registry.rollback()
                    label = f"production rolled back to v{restored.version}"
            except RegistryError as exc:
                raise RequestError(str(exc), status=409) from exc
            self.sync()
            self.log.record_event("rolled_back", what=label, reason=reason)
            return label

    # --- the policy ------------------------------------------------------------------------

    def pair_counts(self) -> tuple[tuple[str, str], tuple[Counts, Counts]] | None:
        """(versions, counts) of both arms; production's counted since the canary's start."""
        arms = self.router.arms
        if arms.canary is None or self.tracker is None:
            return None
        versions = (arms.production.model.version, arms.canary.model.version)
        return versions, arm_counts(self.tracker, versions)

    def _test(self, versions: tuple[str, str]) -> SequentialTest:
        if versions not in self._tests:  # resumed from the log after a restart
            self._tests[versions] = resumed_test(self.log, versions, self.config)
        return self._tests[versions]

    def evaluate(self, trigger: str = "on_demand", apply: bool = True) -> CanaryDecision | None:
        """Run the policy on the stored counts; apply and log its decision. None: no canary."""
        with self._lock:
            self.sync()
            found = self.pair_counts()
            if found is None:
                return None
            versions, counts = found
            arms = self.router.arms
            assert arms.canary is not None
            health: tuple[ArmHealth, ArmHealth] = (
                arms.production.meter.health(),
                arms.canary.meter.health(),
            )
            decision = decide(versions, counts, health, self._test(versions), self.config, trigger)
            if apply and decision.decision != "hold":
                reason = "; ".join(decision.reasons)
                if decision.decision == "promote":
                    self.promote(reason)
                else:
                    self.rollback(reason)
                decision = decision.model_copy(update={"applied": True})
            if self._worth_logging(decision):
                self.log.append(decision)
            self.last_decision = decision
            for listener in self.listeners:
                listener(decision)
            return decision

    def _worth_logging(self, decision: CanaryDecision) -> bool:
        last = self.last_decision
        if last is None or decision.decision != "hold" or decision.trigger != "schedule":
            return True
        return (last.production, last.canary) != (decision.production, decision.canary)

    # --- the schedule ----------------------------------------------------------------------

    def start(self) -> None:
        """Run sync + evaluate every ``interval_s`` on a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="canary-policy", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the schedule."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.evaluate("schedule")
            except Exception:
                log.exception("scheduled canary evaluation failed; retrying in %.0f s",
                              self.interval_s)  # fmt: skip

    def status(self) -> dict[str, Any]:
        """What ``/admin/status`` and ``/ui`` show (see ``mirec.serving.canary.report``)."""
        from mirec.serving.canary.report import status_report

        with self._lock:
            return status_report(self)
