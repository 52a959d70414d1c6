"""The run summary reads kfp.local's executor outputs (fast: a hand-made run directory)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mirec.pipeline.summary import format_summary, read_run


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


def test_summary_of_a_deployed_second_model(tmp_path: Path) -> None:
    _checked(tmp_path)
    gate = {
        "production_version": "1",
        "metric": "recall@20",
        "min_value": 0.05,
        "max_regression": 0.02,
        "reasons": [],
    }
    _task(
        tmp_path,
        "evaluate",
        {"Output": "pass"},
        {
            "challenger_metrics": {"recall@20": 0.5, "unknown_target_share": 0.1},
            "production_metrics": {"recall@20": 0.45, "unknown_target_share": 0.1},
            "gate_report": gate,
        },
    )
    index = {
        "kind": "hnsw",
        "num_items": 1000.0,
        "k": 50.0,
        "recall_at_k": 0.97,
        "fell_back": False,
    }
    _task(tmp_path, "build-index", {}, {"indexed_model": {"index": index}})
    deployment = {
        "version": 2.0,
        "stage": "canary",
        "production_version": 1.0,
        "canary_version": 2.0,
    }
    _task(tmp_path, "deploy", {"Output": "canary"}, {"deployment": deployment})
    text = format_summary(tmp_path, {"validate-events": 2.0, "train": 5.0})
    assert "97 kept of 100 read, 3 quarantined (3.00%)" in text
    assert "data docs: /d/p.html" in text
    assert "| recall@20" in text and "0.5000" in text and "0.4500" in text
    assert "unknown_target_share" in text and "production (v1)" in text
    assert "gate: PASS on recall@20" in text
    assert "index: hnsw over 1000 items, recall@50 vs exact 0.9700" in text
    assert "deployed: version 2 -> canary (registry: production v1, canary v2)" in text
    assert "time: 7 s in steps (validate-events 2s, train 5s)" in text


def test_summary_when_the_gate_fails(tmp_path: Path) -> None:
    _checked(tmp_path)
    reasons = ["recall@20 0.4000 < threshold 1.0000"]
    _task(
        tmp_path,
        "evaluate",
        {"Output": "fail"},
        {
            "challenger_metrics": {"recall@20": 0.4},
            "production_metrics": {},
            "gate_report": {"metric": "recall@20", "reasons": reasons},
        },
    )
    assert set(read_run(tmp_path)) == {"validate-events", "validate-training-set", "evaluate"}
    text = format_summary(tmp_path)
    assert "production (none yet)" in text
    assert "gate: FAIL on recall@20" in text and reasons[0] in text
    assert "index: not built" in text and "deployed: nothing" in text


def test_summary_of_a_run_that_stopped_early(tmp_path: Path) -> None:
    text = format_summary(tmp_path)
    assert "events: not validated" in text and "metrics: not evaluated" in text
