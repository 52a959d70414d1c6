"""The typed records between steps: each round-trips, and a missing or renamed field is named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mirec.errors import BundleMismatchError, ContractError
from mirec.manifest import BundleManifest, read_manifest, write_manifest
from mirec.pipeline.io import DeployRecord, IndexedModel, IndexRecord
from mirec.records import Record
from mirec.registry import GateRecord, GateReport

GATE = GateReport(
    decision="fail",
    metric="recall@20",
    challenger_value=0.2,
    production_value=0.3,
    production_version=3,
    reasons=("recall@20 0.2000 regresses production 0.3000 by more than 0.0100",),
    min_value=0.0,
    max_regression=0.01,
    challenger_metrics={"recall@20": 0.2, "num_users": 50.0},
    production_metrics={"recall@20": 0.3, "unknown_target_share": 0.1},
    pipeline_run_id="run-7",
    data_fingerprint="data-1",
    config_hash="abc",
    code_version="0.1.0",
)
INDEX = IndexRecord(
    kind="hnsw",
    params={"m": 32, "ef_search": 64},
    num_items=1000,
    dim=16,
    recall_at_k=0.97,
    k=50,
    fell_back=False,
    build_seconds=0.5,
)
DEPLOY = DeployRecord(
    version=4,
    tag="mirec_bundle:abc",
    stage="canary",
    production_version=3,
    canary_version=4,
    registry_root="/r",
    bundle_path="/r/bentoml/models/mirec_bundle/abc/bundle",
)
MANIFEST = BundleManifest(
    bundle_format=1,
    created_at="2024-01-01T00:00:00+00:00",
    config={"model": {"name": "sasrec"}},
    metrics={"test/recall@20": 0.25},
    data_fingerprint="data-1",
    vocab_size=10,
    vocab_fingerprint="v",
    dim=16,
    num_interests=1,
    index_metric="inner_product",
    package_versions={"python": "3.11"},
    extra={"index": INDEX.dump()},
    files={"model.pt": "0" * 64},
)
RECORDS: list[Record] = [
    GATE,
    GateRecord(at="2024-01-01T00:00:00+00:00", **GATE.model_dump()),
    INDEX,
    IndexedModel(index=INDEX),
    DEPLOY,
    MANIFEST,
]


def _kfp_numbers(value: Any) -> Any:
    """What a protobuf Struct gives back: every number a float."""
    if isinstance(value, dict):
        return {k: _kfp_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_kfp_numbers(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip_through_json_and_kfp_metadata(record: Record, tmp_path: Path) -> None:
    kind = type(record)
    assert kind.parse(json.loads(json.dumps(record.dump())), "json") == record
    assert kind.parse(_kfp_numbers(record.dump()), "kfp metadata") == record
    assert kind.read(record.write(tmp_path / "record.json")) == record


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_a_missing_or_renamed_field_is_named(record: Record) -> None:
    raw = record.dump()
    name = sorted(raw)[0]
    missing = {k: v for k, v in raw.items() if k != name}
    with pytest.raises(ContractError, match=rf"field '{name}' is missing"):
        type(record).parse(missing, "step output")
    renamed = {**missing, name + "_renamed": raw[name]}
    with pytest.raises(
        ContractError, match=rf"'{name}' is missing; unknown field '{name}_renamed'"
    ):
        type(record).parse(renamed, "step output")


def test_a_bad_value_names_the_field() -> None:
    raw = {**GATE.dump(), "decision": "maybe"}
    with pytest.raises(
        ContractError, match=r"step output: not a valid GateReport: field 'decision'"
    ):
        GateReport.parse(raw, "step output")
    with pytest.raises(ContractError, match=r"field 'index\.kind'"):
        IndexedModel.parse({"index": {**INDEX.dump(), "kind": "lsh"}}, "indexed_model")


def test_records_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        GATE.decision = "pass"  # type: ignore[misc]


def test_the_manifest_reader_refuses_a_missing_field(tmp_path: Path) -> None:
    write_manifest(tmp_path, MANIFEST)
    assert read_manifest(tmp_path) == MANIFEST
    raw = json.loads((tmp_path / "manifest.json").read_text())
    del raw["vocab_fingerprint"]
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleMismatchError, match=r"field 'vocab_fingerprint' is missing"):
        read_manifest(tmp_path)
    with pytest.raises(ContractError, match=r"missing\.json: cannot read GateReport"):
        GateReport.read(tmp_path / "missing.json")
