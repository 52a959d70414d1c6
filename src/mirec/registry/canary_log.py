"""The registry's log of canary decisions: promote, hold or roll back, each with its evidence.

``CanaryDecision`` is the typed record the canary policy (``mirec.serving.canary.policy``)
writes; ``CanaryLog`` appends it to ``<root>/canary_decisions.jsonl`` (one JSON line per
decision, written under the registry's lock and fsynced before the call returns) and reads the
log back, e.g. to resume the sequential test's always-valid p-value after a restart.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from mirec.errors import RegistryError
from mirec.records import Record
from mirec.registry.state import LOCK_FILE
from mirec.registry.versions import now

log = logging.getLogger("mirec.registry")

CANARY_LOG_FILE = "canary_decisions.jsonl"
CANARY_EVENTS_FILE = "canary_events.jsonl"  # canary load failures, failovers, stage changes
Decision = Literal["promote", "hold", "rollback"]


class ArmEvidence(Record):
    """One arm's counts: impressions, clicks, CTR and its 95% Wilson interval."""

    variant: str
    model_version: str
    impressions: int
    clicks: int
    ctr: float
    ctr_low: float
    ctr_high: float


class CanaryDecision(Record):
    """One decision of the canary policy with the evidence for it.

    Attributes:
        at: UTC time of the decision.
        decision: ``promote``, ``hold`` or ``rollback``.
        reasons: why (the guardrail that tripped, the test's verdict, too few impressions).
        trigger: what ran the policy (``schedule``, ``on_demand``).
        applied: whether the decision changed the registry (a hold never does).
        production: production's arm.
        canary: the canary's arm.
        p_value: the always-valid p-value (minimum over every look so far).
        look_p_value: ``min(1, 1/Lambda)`` at this look.
        z_p_value: a fixed-horizon z-test's p-value, for comparison only.
        difference: canary CTR minus production CTR.
        log_lambda: the mSPRT statistic at this look.
        direction: +1 / -1 once the test is significant (the sign when it crossed), else 0.
        tau2: the mixing prior's variance.
        alpha: the test's error rate.
        min_impressions: impressions each arm needs before the test may decide.
        guardrails: the measured guardrail values (error rate, p99 latency, fallback rate).
        limits: their limits.
    """

    at: str
    decision: Decision
    reasons: tuple[str, ...]
    trigger: str
    applied: bool
    production: ArmEvidence
    canary: ArmEvidence
    p_value: float
    look_p_value: float
    z_p_value: float
    difference: float
    log_lambda: float
    direction: int
    tau2: float
    alpha: float
    min_impressions: int
    guardrails: dict[str, float]
    limits: dict[str, float]


def _append_line(root: Path, path: Path, raw: dict[str, Any]) -> None:
    """Append one JSON line under the registry's lock; fsync before returning."""
    root.mkdir(parents=True, exist_ok=True)
    line = json.dumps(raw, sort_keys=True, default=str) + "\n"
    with (root / LOCK_FILE).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with path.open("a") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, decoded line) of a JSON-lines file.

    A last line cut short by a crash (no newline, not JSON) is skipped with a warning; any
    other bad line is a RegistryError naming it.
    """
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            if number == len(lines) and not text.endswith("\n"):
                log.warning("%s:%d: skipping a line cut short by a crash", path, number)
                continue
            raise RegistryError(f"{path}:{number}: not JSON: {exc}") from exc
    return out


class CanaryLog:
    """``<root>/canary_decisions.jsonl`` and ``canary_events.jsonl``: append-only JSON lines."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / CANARY_LOG_FILE
        self.events_path = self.root / CANARY_EVENTS_FILE

    def append(self, decision: CanaryDecision) -> CanaryDecision:
        """Append one decision durably (fsync before returning)."""
        _append_line(self.root, self.path, decision.dump())
        return decision

    def read(self) -> list[CanaryDecision]:
        """Every decision, oldest first; RegistryError naming a bad line."""
        return [
            CanaryDecision.parse(raw, f"{self.path}:{number}", RegistryError)
            for number, raw in _read_lines(self.path)
        ]

    def record_event(self, kind: str, **details: Any) -> dict[str, Any]:
        """Append a canary event (``load_failed``, ``failover``, ``promoted``, ...)."""
        event = {"at": now(), "kind": kind, **details}
        _append_line(self.root, self.events_path, event)
        return event

    def events(self) -> list[dict[str, Any]]:
        """Every recorded canary event, oldest first."""
        return [raw for _, raw in _read_lines(self.events_path)]

    def last_for(self, production_version: str, canary_version: str) -> CanaryDecision | None:
        """The latest decision on this pair of versions, or None."""
        for decision in reversed(self.read()):
            pair = (decision.production.model_version, decision.canary.model_version)
            if pair == (production_version, canary_version):
                return decision
        return None
