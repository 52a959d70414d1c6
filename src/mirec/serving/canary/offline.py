"""The policy without a server: the registry's stages and the stored counts (``mirec canary``).

Guardrails are measured by the serving process only, so an offline evaluation decides on the
counts and the sequential test alone; the server's own schedule applies the guardrails.
"""

from __future__ import annotations

import logging

from mirec.registry import CANARY, PRODUCTION, Registry
from mirec.registry.canary_log import CanaryDecision, CanaryLog
from mirec.serving.canary.policy import ArmHealth, PolicyConfig, decide
from mirec.serving.canary.sequential import SequentialTest
from mirec.serving.canary.split import CANARY_ARM, PRODUCTION_ARM
from mirec.serving.canary.tracker import Counts, CtrTracker, EventReader
from mirec.serving.model import version_label

log = logging.getLogger(__name__)


def stage_versions(registry: Registry) -> tuple[str | None, str | None]:
    """(production, canary) version labels, None for an empty stage."""
    prod, canary = registry.stage(PRODUCTION), registry.stage(CANARY)
    return (
        None if prod is None else version_label(prod),
        None if canary is None else version_label(canary),
    )


def resumed_test(
    log_: CanaryLog, versions: tuple[str, str], config: PolicyConfig
) -> SequentialTest:
    """The pair's sequential test, its always-valid p-value resumed from the decision log."""
    test = SequentialTest(config.tau2, config.alpha)
    last = log_.last_for(*versions)
    if last is not None:
        test.p_value, test.direction = last.p_value, last.direction
    return test


def arm_counts(tracker: CtrTracker, versions: tuple[str, str]) -> tuple[Counts, Counts]:
    """Both arms' counts; production's from the canary's first impression on."""
    tracker.refresh()
    since = tracker.first_seen((CANARY_ARM, versions[1]))
    prod = tracker.counts((PRODUCTION_ARM, versions[0]), since) if since else Counts()
    return prod, tracker.counts((CANARY_ARM, versions[1]))


def evaluate_offline(
    registry: Registry,
    events: EventReader,
    config: PolicyConfig | None = None,
    apply: bool = False,
    trigger: str = "cli",
) -> CanaryDecision | None:
    """Decide on the stored counts; ``apply`` promotes or removes the canary. None: no canary."""
    config = config or PolicyConfig()
    prod, canary = stage_versions(registry)
    if prod is None or canary is None:
        return None
    versions = (prod, canary)
    canary_log = CanaryLog(registry.root)
    counts = arm_counts(CtrTracker(events), versions)
    test = resumed_test(canary_log, versions, config)
    decision = decide(versions, counts, (ArmHealth(), ArmHealth()), test, config, trigger)
    if apply and decision.decision != "hold":
        if decision.decision == "promote":
            registry.promote_canary()
        else:
            registry.clear_canary()
        canary_log.record_event(f"{decision.decision}d_offline", model_version=canary)
        decision = decision.model_copy(update={"applied": True})
    canary_log.append(decision)
    return decision
