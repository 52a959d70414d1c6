"""The run summary reads kfp.local's executor outputs (fast: a hand-made run directory)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mirec.errors import ContractError
from mirec.pipeline.io import DeployRecord, IndexedModel, IndexRecord
from mirec.pipeline.summary import format_summary, read_run
from mirec.registry import GateReport


def _task(
    run: Path, name: str, params: dict[str, Any], artifacts: dict[str, dict[str, Any]]
) -> None:
    out = run / name
    out.mkdir(parents=True)
    payload = {
        "parameterValues": params,
        "artifacts": {
            key: {"artifacts": [{"name": key, "uri": str(out / key), "metadata": meta}]}
            for key, meta in artifacts.items()
        },
    }
    (out / "executor_output.json").write_text(json.dumps(payload))


def _checked(run: Path) -> None:
    checks = {
        "rows_read": 100.0,
        "rows_kept": 97.0,
        "rows_quarantined": 3.0,
        "bad_fraction": 0.03,
        "suite_success": 1.0,
    }
    _task(run, "validate-events", {}, {"checks": checks, "events": {"data_docs": "/d/p.html"}})
    _task(run, "validate-training-set", {}, {"checks": {"rows": 90.0, "suite_success": 1.0}})


def _gate(decision: str, production: dict[str, float], **changes: Any) -> dict[str, Any]:
    """The evaluate step's gate_report metadata, written by the record it reads back."""
    fields: dict[str, Any] = {
        "decision": decision,
        "metric": "recall@20",
        "challenger_value": 0.5,
        "production_value": production.get("recall@20"),
        "production_version": 1 if production else None,
        "reasons": (),
        "min_value": 0.05,
        "max_regression": 0.02,
        "challenger_metrics": {"recall@20": 0.5, "unknown_target_share": 0.1},
        "production_metrics": production,
        "pipeline_run_id": "run-2",
        "data_fingerprint": "data-2",
        "config_hash": "abc",
        "code_version": "test",
    }
    return GateReport(**{**fields, **changes}).dump()


def test_summary_of_a_deployed_second_model(tmp_path: Path) -> None:
    _checked(tmp_path)
    gate = _gate("pass", {"recall@20": 0.45, "unknown_target_share": 0.1})
    _task(tmp_path, "evaluate", {"Output": "pass"}, {"gate_report": gate})
    index = IndexRecord(
        kind="hnsw",
        params={"m": 32},
        num_items=1000,
        dim=16,
        recall_at_k=0.97,
        k=50,
        fell_back=False,
        build_seconds=1.5,
    )
    _task(tmp_path, "build-index", {}, {"indexed_model": IndexedModel(index=index).dump()})
    deployment = DeployRecord(
        version=2,
        tag="mirec_bundle:b",
        stage="canary",
        production_version=1,
        canary_version=2,
        registry_root="/r",
        bundle_path="/r/b",
    )
    _task(tmp_path, "deploy", {"Output": "canary"}, {"deployment": deployment.dump()})
    text = format_summary(tmp_path, {"validate-events": 2.0, "train": 5.0})
    assert "97 kept of 100 read, 3 quarantined (3.00%)" in text
    assert "data docs: /d/p.html" in text
    assert "| recall@20" in text and "0.5000" in text and "0.4500" in text
    assert "unknown_target_share" in text and "production (v1)" in text
    assert "gate: PASS on recall@20 (min 0.0500, max regression 0.0200)" in text
    assert "index: hnsw over 1000 items, recall@50 vs exact 0.9700" in text
    assert "deployed: version 2 -> canary (registry: production v1, canary v2)" in text
    assert "time: 7 s in steps (validate-events 2s, train 5s)" in text


def test_summary_when_the_gate_fails(tmp_path: Path) -> None:
    _checked(tmp_path)
    reasons = ("recall@20 0.4000 < threshold 1.0000",)
    gate = _gate("fail", {}, reasons=reasons, challenger_value=0.4)
    _task(tmp_path, "evaluate", {"Output": "fail"}, {"gate_report": gate})
    assert set(read_run(tmp_path)) == {"validate-events", "validate-training-set", "evaluate"}
    text = format_summary(tmp_path)
    assert "production (none yet)" in text
    assert "gate: FAIL on recall@20" in text and reasons[0] in text
    assert "index: not built" in text and "deployed: nothing" in text


def test_a_renamed_field_fails_with_its_name_instead_of_printing_zeros(tmp_path: Path) -> None:
    _checked(tmp_path)
    gate = _gate("pass", {})
    gate["metric_name"] = gate.pop("metric")
    _task(tmp_path, "evaluate", {"Output": "pass"}, {"gate_report": gate})
    with pytest.raises(ContractError, match=r"gate_report.*'metric' is missing.*'metric_name'"):
        format_summary(tmp_path)


def test_summary_of_a_run_that_stopped_early(tmp_path: Path) -> None:
    text = format_summary(tmp_path)
    assert "events: not validated" in text and "metrics: not evaluated" in text
