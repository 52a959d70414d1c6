"""The canary policy: promote, hold or roll back, from the counts, the guardrails and the test.

In order:

1. **Guardrails** (checked first, once the canary has answered ``min_guardrail_requests``):
   the canary's error rate above ``max_error_rate``, its p99 latency above
   ``max(max_p99_ms, max_p99_ratio x production's p99)``, or its fallback rate (answers not
   from its model: popularity, or production after a canary failure) more than
   ``max_fallback_excess`` above production's -> **rollback**.
2. **Minimum evidence**: fewer than ``min_impressions`` impressions in either arm -> **hold**.
3. **The test** (``mirec.serving.canary.sequential``, mSPRT, prior ``tau2``, level ``alpha``):
   the always-valid p-value at or below ``alpha`` -> **promote** when the canary's CTR is the
   higher one, **rollback** when it is the lower one; otherwise **hold**.

``decide`` is a pure function of its inputs; ``CanaryDecision`` (``mirec.registry``) is the
record it returns, which the controller writes to the registry's canary log.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from mirec.errors import ConfigError
from mirec.registry.canary_log import ArmEvidence, CanaryDecision, Decision
from mirec.registry.versions import now
from mirec.serving.canary.sequential import (
    DEFAULT_ALPHA,
    DEFAULT_TAU2,
    SequentialTest,
    wilson_interval,
)
from mirec.serving.canary.tracker import Counts


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's thresholds (defaults in code; see docs/canary.md)."""

    min_impressions: int = 2_000
    alpha: float = DEFAULT_ALPHA
    tau2: float = DEFAULT_TAU2
    min_guardrail_requests: int = 50
    max_error_rate: float = 0.01
    max_p99_ms: float = 50.0
    max_p99_ratio: float = 2.0
    max_fallback_excess: float = 0.05


@dataclass(frozen=True)
class ArmHealth:
    """What the server measured of one arm since it started: requests, errors, fallbacks, p99."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    p99_ms: float = 0.0

    def rate(self, part: int) -> float:
        """``part`` per request (0 without requests)."""
        return part / self.requests if self.requests else 0.0


def evidence(variant: str, version: str, counts: Counts) -> ArmEvidence:
    """An arm's counts with its CTR and 95% Wilson interval."""
    interval = wilson_interval(counts.clicks, counts.impressions)
    return ArmEvidence(
        variant=variant,
        model_version=version,
        impressions=counts.impressions,
        clicks=counts.clicks,
        ctr=counts.ctr,
        ctr_low=interval.low,
        ctr_high=interval.high,
    )


def guardrail_values(production: ArmHealth, canary: ArmHealth) -> dict[str, float]:
    """The measured guardrail values recorded with every decision."""
    return {
        "canary_requests": float(canary.requests),
        "canary_error_rate": canary.rate(canary.errors),
        "canary_fallback_rate": canary.rate(canary.fallbacks),
        "production_fallback_rate": production.rate(production.fallbacks),
        "canary_p99_ms": canary.p99_ms,
        "production_p99_ms": production.p99_ms,
    }


def guardrail_limits(config: PolicyConfig, production: ArmHealth) -> dict[str, float]:
    """The limits the guardrail values are held to."""
    return {
        "max_error_rate": config.max_error_rate,
        "max_p99_ms": max(config.max_p99_ms, config.max_p99_ratio * production.p99_ms),
        "max_fallback_rate": production.rate(production.fallbacks) + config.max_fallback_excess,
        "min_guardrail_requests": float(config.min_guardrail_requests),
    }


def tripped(values: dict[str, float], limits: dict[str, float]) -> list[str]:
    """The guardrails the canary breaks (empty below ``min_guardrail_requests``)."""
    if values["canary_requests"] < limits["min_guardrail_requests"]:
        return []
    checks = (
        ("canary_error_rate", "max_error_rate", "error rate"),
        ("canary_p99_ms", "max_p99_ms", "p99 latency (ms)"),
        ("canary_fallback_rate", "max_fallback_rate", "fallback rate"),
    )
    return [
        f"guardrail: canary {label} {values[v]:.4g} > limit {limits[lim]:.4g}"
        for v, lim, label in checks
        if values[v] > limits[lim]
    ]


def _verdict(
    test: SequentialTest, prod: Counts, canary: Counts, config: PolicyConfig
) -> tuple[Decision, str]:
    low = min(prod.impressions, canary.impressions)
    if low < config.min_impressions:
        return "hold", f"{low} impressions in the smaller arm; {config.min_impressions} needed"
    if not test.significant:
        return "hold", f"always-valid p {test.p_value:.4f} > alpha {config.alpha}"
    better = "higher" if test.direction > 0 else "lower"
    decision: Decision = "promote" if test.direction > 0 else "rollback"
    return decision, f"canary CTR {better} than production, always-valid p {test.p_value:.4g}"


def decide(
    versions: tuple[str, str],
    counts: tuple[Counts, Counts],
    health: tuple[ArmHealth, ArmHealth],
    test: SequentialTest,
    config: PolicyConfig,
    trigger: str = "on_demand",
) -> CanaryDecision:
    """One decision on (production, canary); ``test`` takes this look's counts.

    Args:
        versions: production's and the canary's model versions.
        counts: their impressions and clicks (production's since the canary started).
        health: what the server measured of each arm (guardrails).
        test: the running sequential test of this pair (resumed from the log after a restart).
        config: thresholds.
        trigger: what ran the policy (recorded).
    """
    prod, canary = counts
    test.look(prod.clicks, prod.impressions, canary.clicks, canary.impressions)
    values = guardrail_values(*health)
    limits = guardrail_limits(config, health[0])
    broken = tripped(values, limits)
    decision, reason = ("rollback", "") if broken else _verdict(test, prod, canary, config)
    last = test.last
    assert last is not None
    return CanaryDecision(
        at=now(),
        decision=decision,
        reasons=tuple(broken) if broken else (reason,),
        trigger=trigger,
        applied=False,
        production=evidence("production", versions[0], prod),
        canary=evidence("canary", versions[1], canary),
        p_value=test.p_value,
        look_p_value=last.p_value,
        z_p_value=last.z_p_value,
        difference=last.difference,
        log_lambda=last.log_lambda,
        direction=test.direction,
        tau2=test.tau2,
        alpha=test.alpha,
        min_impressions=config.min_impressions,
        guardrails=values,
        limits=limits,
    )


def policy_from_json(text: str | None) -> PolicyConfig:
    """``PolicyConfig`` from a JSON object of overrides (``$MIREC_CANARY_POLICY``).

    Raises:
        ConfigError: not a JSON object, an unknown field, or a value of the wrong type.
    """
    if not text:
        return PolicyConfig()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"canary policy is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"canary policy must be a JSON object, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(PolicyConfig)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown canary policy fields {unknown}; known: {sorted(fields)}")
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"canary policy field {name!r} must be a number >= 0, got {value!r}")
    return PolicyConfig(**raw)
