"""The gate's report, and the registry's log of every gate decision, pass or fail.

``GateReport`` is written once, by the pipeline's evaluate step (the ``gate_report`` artifact,
its KFP metadata and the registry's log carry the same record), and read with
``GateReport.parse`` / ``GateReport.read`` by the deploy step and the run summary.
"""

from __future__ import annotations

from typing import Literal

from mirec.records import Record


class GateReport(Record):
    """One gate decision with the evidence for it.

    Attributes:
        decision: ``"pass"`` or ``"fail"``, the string the pipeline branches on.
        metric: the metric the gate compares (``gate.metric``).
        challenger_value: the challenger's value of ``metric``.
        production_value: production's value on the same users; None without production.
        production_version: the registry version in production; None when there is none.
        reasons: why it failed (empty when it passed).
        min_value: the absolute threshold (``gate.min_value``).
        max_regression: the allowed drop below production (``gate.max_regression``).
        challenger_metrics: every metric of the challenger on its held-out users.
        production_metrics: production's metrics on the same users (empty without production).
        pipeline_run_id: the run that evaluated the challenger.
        data_fingerprint: the challenger's training data.
        config_hash: sha256 of the challenger's resolved config.
        code_version: the code that ran the evaluation.
    """

    decision: Literal["pass", "fail"]
    metric: str
    challenger_value: float
    production_value: float | None
    production_version: int | None
    reasons: tuple[str, ...]
    min_value: float
    max_regression: float
    challenger_metrics: dict[str, float]
    production_metrics: dict[str, float]
    pipeline_run_id: str
    data_fingerprint: str
    config_hash: str
    code_version: str


class GateRecord(GateReport):
    """A ``GateReport`` as the registry logged it, with the UTC time ``at`` it was recorded."""

    at: str
