"""The summary of a local pipeline run: data checks, metrics vs production, gate, index, deploy.

It reads what each executed step recorded in kfp.local's run directory
(``<run_dir>/<task>/executor_output.json``: returned parameters and artifact metadata, i.e. the
KFP Metrics the step logged), so it shows exactly what a KFP UI would. The model steps' facts
are typed records (``GateReport``, ``IndexedModel``, ``DeployRecord``): a missing or renamed
field fails here with its name instead of printing a zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirec.pipeline.io import DeployRecord, IndexedModel
from mirec.registry import GateReport
from mirec.tables import format_table

EXECUTOR_OUTPUT = "executor_output.json"
SUMMARY_KEYS = ("recall@20", "recall@50", "ndcg@10", "ndcg@20", "unknown_target_share")
STEPS = (
    "validate-events",
    "build-features",
    "make-training-set",
    "validate-training-set",
    "train",
    "evaluate",
    "build-index",
    "deploy",
)


@dataclass(frozen=True)
class TaskOutput:
    """One executed task: its returned parameters and each output artifact's metadata."""

    parameters: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    uris: dict[str, str] = field(default_factory=dict)


def read_run(run_dir: str | Path) -> dict[str, TaskOutput]:
    """Task name -> outputs for every task of a kfp.local run directory that finished."""
    out: dict[str, TaskOutput] = {}
    for path in sorted(Path(run_dir).glob(f"*/{EXECUTOR_OUTPUT}")):
        payload = json.loads(path.read_text())
        artifacts, uris = {}, {}
        for name, entry in payload.get("artifacts", {}).items():
            first = (entry.get("artifacts") or [{}])[0]
            artifacts[name] = dict(first.get("metadata", {}))
            uris[name] = str(first.get("uri", ""))
        out[path.parent.name] = TaskOutput(
            dict(payload.get("parameterValues", {})), artifacts, uris
        )
    return out


def _version(value: Any) -> str:
    """``v3`` for a version number (KFP may hand back ``3.0``), ``none`` for nothing."""
    return "none" if value in (None, "") else f"v{int(float(value))}"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _data_section(tasks: dict[str, TaskOutput]) -> list[str]:
    events = tasks.get("validate-events")
    lines = ["data checks"]
    if events is None:
        return lines + ["  events: not validated (the run stopped before)"]
    checks = events.artifacts.get("checks", {})
    lines.append(
        f"  events: {int(checks.get('rows_kept', 0))} kept of {int(checks.get('rows_read', 0))}"
        f" read, {int(checks.get('rows_quarantined', 0))} quarantined"
        f" ({100 * float(checks.get('bad_fraction', 0.0)):.2f}%),"
        f" expectations {'passed' if checks.get('suite_success') else 'FAILED'}"
    )
    docs = events.artifacts.get("events", {}).get("data_docs") or events.uris.get("data_docs")
    if docs:
        lines.append(f"  data docs: {docs}")
    features = tasks.get("build-features")
    if features is not None:
        fm = features.artifacts.get("feature_metrics", {})
        online = features.artifacts.get("features", {}).get("online", {})
        lines.append(
            f"  features: {int(fm.get('users', 0))} users, {int(fm.get('snapshot_rows', 0))}"
            f" point-in-time snapshots, vocabulary {int(fm.get('vocab_size', 0))} items"
            f" ({int(fm.get('new_items', 0))} new), online store {online.get('online_store', '?')}"
        )
    made = tasks.get("make-training-set")
    if made is not None:
        rows = int(made.artifacts.get("stats", {}).get("rows", 0))
        trained = tasks.get("train")
        examples = trained.artifacts.get("metrics", {}) if trained else {}
        used = (
            f" = {int(examples['training_examples'])} training examples"
            if "training_examples" in examples
            else " (not trained on yet)"
        )
        checked = tasks.get("validate-training-set")
        verdict = "not checked"
        if checked is not None:
            ok = checked.artifacts.get("checks", {}).get("suite_success")
            verdict = "expectations passed" if ok else "expectations FAILED"
        lines.append(f"  training set: {rows} rows (Feast, point-in-time){used}, {verdict}")
    return lines


def _metrics_section(tasks: dict[str, TaskOutput]) -> list[str]:
    gate = tasks.get("evaluate")
    if gate is None:
        return ["metrics: not evaluated (the run stopped before)"]
    report = GateReport.parse(gate.artifacts.get("gate_report"), "evaluate: gate_report")
    ours, theirs = report.challenger_metrics, report.production_metrics
    version = report.production_version
    label = "production (none yet)" if version is None else f"production ({_version(version)})"
    keys = [k for k in SUMMARY_KEYS if k in ours or k in theirs]
    rows = [[k, _fmt(ours.get(k)), _fmt(theirs.get(k))] for k in keys]
    table = format_table(["metric (test split)", "challenger", label], rows)
    lines = ["metrics against production (the challenger's held-out users)", table]
    limits = f"min {_fmt(report.min_value)}, max regression {_fmt(report.max_regression)}"
    reasons = "" if not report.reasons else " - " + "; ".join(report.reasons)
    lines.append(f"gate: {report.decision.upper()} on {report.metric} ({limits}){reasons}")
    return lines


def _deploy_section(tasks: dict[str, TaskOutput]) -> list[str]:
    indexed = tasks.get("build-index")
    if indexed is None:
        return ["index: not built (gate failed or run stopped)", "deployed: nothing"]
    where = "build-index: indexed_model"
    info = IndexedModel.parse(indexed.artifacts.get("indexed_model"), where).index
    fell_back = " (ANN missed the recall gate: exact fallback)" if info.fell_back else ""
    lines = [
        f"index: {info.kind} over {info.num_items} items, "
        f"recall@{info.k} vs exact {_fmt(info.recall_at_k)}{fell_back}"
    ]
    deployed = tasks.get("deploy")
    if deployed is None:
        return lines + ["deployed: nothing (deploy did not finish)"]
    meta = DeployRecord.parse(deployed.artifacts.get("deployment"), "deploy: deployment")
    lines.append(
        f"deployed: version {meta.version} -> {meta.stage}"
        f" (registry: production {_version(meta.production_version)},"
        f" canary {_version(meta.canary_version)})"
    )
    return lines


def format_summary(run_dir: str | Path, task_seconds: dict[str, float] | None = None) -> str:
    """The human-readable summary of one local run."""
    tasks = read_run(run_dir)
    parts = _data_section(tasks) + [""] + _metrics_section(tasks) + [""] + _deploy_section(tasks)
    if task_seconds:
        total = sum(task_seconds.values())
        timing = ", ".join(f"{name} {sec:.0f}s" for name, sec in task_seconds.items())
        parts += ["", f"time: {total:.0f} s in steps ({timing})"]
    return "\n".join(parts)
