"""The ``production`` / ``canary`` stages: the rules of every stage change, on the state.

Each function changes a state inside one ``StateFile.transaction``, so a stage change is one
atomic write; ``deploy_version`` is the pipeline's rule for a model that passed the gate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirec.errors import RegistryError
from mirec.registry.versions import ModelVersion, find, now

if TYPE_CHECKING:
    from mirec.registry.registry import Registry

log = logging.getLogger("mirec.registry")

PRODUCTION, CANARY = "production", "canary"
STAGES = (PRODUCTION, CANARY)


def check_stage(name: str) -> str:
    """``name`` when it is a stage; RegistryError naming the stages otherwise."""
    if name not in STAGES:
        raise RegistryError(f"unknown stage {name!r}; stages are {list(STAGES)}")
    return name


def log_change(
    state: dict[str, Any], action: str, stage: str, version: int | None, previous: int | None
) -> None:
    """Append a stage change to the history."""
    state["history"].append(
        {"at": now(), "action": action, "stage": stage, "version": version, "previous": previous}
    )


def replace_production(state: dict[str, Any], version: int, action: str) -> None:
    """Make ``version`` production; the replaced one goes on the rollback stack."""
    current = state["stages"][PRODUCTION]
    if current == version:
        return
    if current is not None:
        state["previous_production"].append(current)
    state["stages"][PRODUCTION] = version
    log_change(state, action, PRODUCTION, version, current)


def set_stage(state: dict[str, Any], name: str, version: int, where: Path) -> None:
    """Put ``version`` in stage ``name``; production cannot also be the canary."""
    check_stage(name)
    find(state, version, where)
    stages = state["stages"]
    if name == CANARY and stages[PRODUCTION] == version:
        raise RegistryError(f"version {version} is production; it cannot be the canary")
    if name == PRODUCTION:
        replace_production(state, version, "set_stage")
        if stages[CANARY] == version:
            stages[CANARY] = None
    elif stages[CANARY] != version:
        log_change(state, "set_stage", CANARY, version, stages[CANARY])
        stages[CANARY] = version


def promote_canary(state: dict[str, Any], where: Path) -> ModelVersion:
    """Make the canary production (the old production is kept for rollback)."""
    canary = state["stages"][CANARY]
    if canary is None:
        raise RegistryError(f"no canary to promote in {where}")
    replace_production(state, canary, "promote")
    state["stages"][CANARY] = None
    return find(state, canary, where)


def rollback(state: dict[str, Any], where: Path) -> ModelVersion:
    """Restore the previous production version."""
    if not state["previous_production"]:
        raise RegistryError(f"no previous production version to roll back to in {where}")
    restored = state["previous_production"].pop()
    current = state["stages"][PRODUCTION]
    state["stages"][PRODUCTION] = restored
    log_change(state, "rollback", PRODUCTION, restored, current)
    log.warning("rolling production back from version %s to %d", current, restored)
    return find(state, restored, where)


def clear_canary(state: dict[str, Any]) -> None:
    """Remove the canary (production is untouched)."""
    previous = state["stages"][CANARY]
    state["stages"][CANARY] = None
    log_change(state, "clear_canary", CANARY, None, previous)


def deploy_version(registry: Registry, version: int) -> str:
    """Deploy a version that passed the gate; returns the stage it went to.

    The first model goes straight to production (nothing to compare it against); later
    ones become the canary. Deploying the current production or canary again is a no-op.
    """
    production = registry.stage(PRODUCTION)
    if production is None:
        log.info("version %d goes straight to production: no production model to compare", version)
        registry.set_stage(PRODUCTION, version)
        return PRODUCTION
    if production.version == version:
        log.info("version %d is already production", version)
        return PRODUCTION
    registry.set_stage(CANARY, version)
    return CANARY
