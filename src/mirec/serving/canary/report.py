"""What the operator sees: the status of the canary (``/admin/status``, ``/ui``, the CLI table)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mirec.registry.canary_log import ArmEvidence, CanaryDecision
from mirec.serving.canary.sequential import wilson_interval
from mirec.serving.canary.split import CANARY_ARM, PRODUCTION_ARM
from mirec.serving.canary.tracker import Arm, CtrTracker
from mirec.tables import format_table

if TYPE_CHECKING:
    from mirec.serving.canary.controller import CanaryController

EVENTS_SHOWN = 20


def series_points(tracker: CtrTracker, arm: Arm, since: float | None) -> list[dict[str, float]]:
    """Cumulative CTR of an arm over time with its 95% Wilson band."""
    points = []
    for at, impressions, clicks in tracker.series(arm, since):
        band = wilson_interval(clicks, impressions)
        ctr = clicks / impressions if impressions else 0.0
        points.append(
            {"t": at, "impressions": impressions, "clicks": clicks, "ctr": ctr,
             "low": band.low, "high": band.high}
        )  # fmt: skip
    return points


def status_report(ctl: CanaryController) -> dict[str, Any]:
    """The controller's state as one JSON-ready dict."""
    arms = ctl.router.arms
    prod_version = arms.production.model.version
    canary_version = None if arms.canary is None else arms.canary.model.version
    out: dict[str, Any] = {
        "production_version": prod_version,
        "canary_version": canary_version,
        "weight": arms.split.weight,
        "policy": {k: getattr(ctl.config, k) for k in ctl.config.__dataclass_fields__},
        "interval_s": ctl.interval_s,
        "health": {
            PRODUCTION_ARM: vars(arms.production.meter.health()),
            CANARY_ARM: None if arms.canary is None else vars(arms.canary.meter.health()),
        },
        "decision": None if ctl.last_decision is None else ctl.last_decision.dump(),
        "series": {},
        "events": ctl.log.events()[-EVENTS_SHOWN:],
    }
    if ctl.tracker is not None:
        ctl.tracker.refresh()
        since = None
        if canary_version is not None:
            since = ctl.tracker.first_seen((CANARY_ARM, canary_version))
        out["series"][PRODUCTION_ARM] = series_points(
            ctl.tracker, (PRODUCTION_ARM, prod_version), since
        )
        if canary_version is not None:
            out["series"][CANARY_ARM] = series_points(
                ctl.tracker, (CANARY_ARM, canary_version), since
            )
    return out


def arm_table(arms: list[ArmEvidence]) -> str:
    """Impressions, clicks and CTR with its 95% interval, one row per arm."""
    rows = [
        [a.variant, a.model_version, a.impressions, a.clicks, f"{a.ctr:.4%}",
         f"[{a.ctr_low:.4%}, {a.ctr_high:.4%}]"]
        for a in arms
    ]  # fmt: skip
    return format_table(["variant", "version", "impressions", "clicks", "CTR", "95% CI"], rows)


def decision_text(decision: CanaryDecision) -> str:
    """The table of a decision, then its test statistics, verdict and guardrails."""
    lines = [
        arm_table([decision.production, decision.canary]),
        "",
        f"mSPRT (tau^2 {decision.tau2:g}, alpha {decision.alpha:g}): always-valid p "
        f"{decision.p_value:.4f} (this look {decision.look_p_value:.4f}, log Lambda "
        f"{decision.log_lambda:.3f}; fixed-horizon z-test p {decision.z_p_value:.4f})",
        f"decision: {decision.decision.upper()}"
        + (" (applied)" if decision.applied else "")
        + f" - {'; '.join(decision.reasons)}",
        "guardrails: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(decision.guardrails.items())),
    ]
    return "\n".join(lines)


def plot_series(series: dict[str, list[dict[str, float]]], path: str, title: str = "") -> str:
    """A PNG of cumulative CTR per arm over time with its 95% band; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    start = min((p["t"] for points in series.values() for p in points), default=0.0)
    for arm, points in series.items():
        if not points:
            continue
        t = [p["t"] - start for p in points]
        line = ax.plot(t, [p["ctr"] for p in points], label=f"{arm}", linewidth=2)[0]
        ax.fill_between(t, [p["low"] for p in points], [p["high"] for p in points],
                        color=line.get_color(), alpha=0.2)  # fmt: skip
    ax.set_xlabel("seconds since the canary's first impression")
    ax.set_ylabel("CTR (clicks / impressions)")
    ax.set_title(title or "CTR per variant, cumulative, 95% Wilson band")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
