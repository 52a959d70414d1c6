"""mirec.registry over a real BentoML model store in a temporary BENTOML_HOME."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mirec.registry.state as state_module
from mirec.errors import BundleMismatchError, RegistryError
from mirec.manifest import BundleManifest, write_manifest
from mirec.registry import (
    BUNDLE_DIR,
    MODEL_NAME,
    GateReport,
    ModelVersion,
    Registry,
    config_hash,
    deploy_version,
)

pytestmark = pytest.mark.integration

CONFIG = {"model": {"name": "comirec_sa", "dim": 8}, "index": {"ivf_nlist": None}, "seed": 0}


def make_bundle(directory: Path, seed: int = 0) -> Path:
    """A minimal bundle directory: manifest.json plus two files."""
    directory.mkdir(parents=True)
    np.save(directory / "item_vecs.npy", np.random.default_rng(seed).random((5, 8), np.float32))
    (directory / "vocab.json").write_text(json.dumps({"items": ["a", "b", "c", "d"]}))
    manifest = BundleManifest(
        bundle_format=1,
        created_at="2024-01-01T00:00:00+00:00",
        config=CONFIG,
        metrics={"recall@20": 0.3},
        data_fingerprint=f"data-{seed}",
        vocab_size=4,
        vocab_fingerprint="vocab-0",
        dim=8,
        num_interests=4,
        index_metric="inner_product",
        package_versions={"mirec": "0.1.0"},
        extra={},
        files={},
    )
    write_manifest(directory, manifest)
    return directory


def register(reg: Registry, bundle: Path, fingerprint: str, **overrides: Any) -> ModelVersion:
    kwargs: dict[str, Any] = {
        "metrics": {"recall@20": 0.3},
        "data_fingerprint": fingerprint,
        "config": CONFIG,
        "code_version": "0.1.0",
        "lineage": {"pipeline_run_id": "run-1"},
        **overrides,
    }
    return reg.register(bundle, **kwargs)


def gate_report(decision: str, **changes: Any) -> GateReport:
    fields: dict[str, Any] = {
        "decision": decision,
        "metric": "recall@20",
        "challenger_value": 0.3,
        "production_value": 0.28,
        "production_version": 1,
        "reasons": (),
        "min_value": 0.0,
        "max_regression": 0.01,
        "challenger_metrics": {"recall@20": 0.3},
        "production_metrics": {"recall@20": 0.28},
        "pipeline_run_id": "run-1",
        "data_fingerprint": "data-2",
        "config_hash": config_hash(CONFIG),
        "code_version": "0.1.0",
    }
    return GateReport(**{**fields, **changes})


def crash(*args: Any) -> None:
    """Stands in for os.replace: the process dies just before the rename."""
    raise OSError("simulated crash during rename")


@pytest.fixture
def reg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    return Registry(tmp_path / "registry")


@pytest.fixture
def two_versions(reg: Registry, tmp_path: Path) -> tuple[Registry, ModelVersion, ModelVersion]:
    first = register(reg, make_bundle(tmp_path / "b1", 1), "data-1")
    second = register(reg, make_bundle(tmp_path / "b2", 2), "data-2")
    return reg, first, second


def test_register_list_get(reg: Registry, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    version = register(reg, bundle, "data-0")
    assert version.version == 1 and version.tag.startswith(MODEL_NAME + ":")
    assert version.config_hash == config_hash(CONFIG)
    assert version.lineage["pipeline_run_id"] == "run-1"
    assert version.lineage["config"] == CONFIG and version.lineage["code_version"] == "0.1.0"
    assert reg.versions() == [version] and reg.get(1) == version
    stored = reg.bundle_path(1)
    assert stored.parent == Path(reg.store.get(version.tag).path)
    assert stored.name == BUNDLE_DIR
    for name in ("manifest.json", "item_vecs.npy", "vocab.json"):
        assert (stored / name).read_bytes() == (bundle / name).read_bytes()
    model = reg.store.get(version.tag)  # the real BentoML model carries the registry record
    assert model.info.labels["mirec_version"] == "1"
    assert model.info.labels["data_fingerprint"] == "data-0"
    assert Path(os.environ["BENTOML_HOME"]) == tmp_path / "bentoml"
    assert reg.history()[0]["action"] == "register"


def test_rerun_with_same_inputs_is_idempotent(reg: Registry, tmp_path: Path) -> None:
    first = register(reg, make_bundle(tmp_path / "b1"), "data-0")
    reordered = {"seed": 0, "index": {"ivf_nlist": None}, "model": {"dim": 8, "name": "comirec_sa"}}
    again = register(reg, make_bundle(tmp_path / "b2", 5), "data-0", config=reordered)
    assert again == first
    assert len(reg.store.list(MODEL_NAME)) == 1
    changed = register(reg, tmp_path / "b2", "data-0", code_version="0.2.0")
    other_config = register(reg, tmp_path / "b2", "data-0", config={**CONFIG, "seed": 1})
    assert (changed.version, other_config.version) == (2, 3)
    assert len(reg.store.list(MODEL_NAME)) == 3


def test_first_deploy_is_production_then_canary(two_versions, caplog) -> None:
    reg, first, second = two_versions
    assert reg.stage("production") is None and reg.stage("canary") is None
    with caplog.at_level("INFO", logger="mirec.registry"):
        assert deploy_version(reg, first.version) == "production"
    assert "no production model to compare" in caplog.text
    assert deploy_version(reg, second.version) == "canary"
    assert reg.stage("production") == first and reg.stage("canary") == second
    assert deploy_version(reg, second.version) == "canary"  # rerun: no change
    assert deploy_version(reg, first.version) == "production"
    assert reg.stage("production") == first and reg.stage("canary") == second


def test_promote_then_rollback_restores_previous_production(two_versions) -> None:
    reg, first, second = two_versions
    deploy_version(reg, first.version)
    deploy_version(reg, second.version)
    assert reg.promote_canary() == second
    assert reg.stage("production") == second and reg.stage("canary") is None
    assert reg.rollback() == first
    assert reg.stage("production") == first
    actions = [(h["action"], h.get("stage"), h.get("version")) for h in reg.history()]
    assert actions[2:] == [
        ("set_stage", "production", 1),
        ("set_stage", "canary", 2),
        ("promote", "production", 2),
        ("rollback", "production", 1),
    ]
    assert all("at" in h for h in reg.history())
    with pytest.raises(RegistryError, match="no previous production"):
        reg.rollback()
    with pytest.raises(RegistryError, match="no canary"):
        reg.promote_canary()


def test_stage_rules(two_versions) -> None:
    reg, first, second = two_versions
    reg.set_stage("production", first.version)
    with pytest.raises(RegistryError, match="cannot be the canary"):
        reg.set_stage("canary", first.version)
    reg.set_stage("canary", second.version)
    reg.clear_canary()
    assert reg.stage("canary") is None and reg.stage("production") == first
    with pytest.raises(RegistryError, match="unknown stage 'staging'"):
        reg.set_stage("staging", first.version)


def test_unknown_version_is_named(two_versions) -> None:
    reg, _, _ = two_versions
    with pytest.raises(RegistryError, match=r"unknown model version 7 .*known versions: \[1, 2\]"):
        reg.get(7)
    with pytest.raises(RegistryError, match="unknown model version 9"):
        reg.set_stage("production", 9)
    with pytest.raises(RegistryError, match="unknown model version 7"):
        reg.bundle_path(7)


def test_crash_midway_keeps_production_and_a_valid_file(two_versions, monkeypatch) -> None:
    reg, first, second = two_versions
    deploy_version(reg, first.version)
    deploy_version(reg, second.version)
    before = reg.path.read_text()
    monkeypatch.setattr(state_module.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        reg.promote_canary()
    with pytest.raises(OSError, match="simulated crash"):
        reg.set_stage("production", second.version)
    monkeypatch.undo()
    assert reg.path.read_text() == before
    fresh = Registry(reg.root)
    assert fresh.stage("production") == first and fresh.stage("canary") == second
    assert not list(reg.root.glob("*.tmp"))
    assert fresh.promote_canary() == second  # works once the fault is gone


def test_crash_during_register_keeps_registry(reg: Registry, tmp_path: Path, monkeypatch) -> None:
    first = register(reg, make_bundle(tmp_path / "b1"), "data-0")
    deploy_version(reg, first.version)
    monkeypatch.setattr(state_module.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        register(reg, make_bundle(tmp_path / "b2", 2), "data-2")
    monkeypatch.undo()
    assert reg.versions() == [first] and reg.stage("production") == first
    assert [m.tag for m in reg.store.list(MODEL_NAME)] == [reg.store.get(first.tag).tag]


def test_export_import_round_trip(two_versions, tmp_path: Path, monkeypatch) -> None:
    reg, first, _ = two_versions
    exported = reg.export(first.version, tmp_path / "exports" / "v1.bentomodel")
    assert exported.is_file()
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "elsewhere" / "bentoml"))
    other = Registry(tmp_path / "elsewhere" / "registry")
    imported = other.import_(exported)
    assert imported.version == 1 and imported.tag == first.tag
    assert imported.metrics == first.metrics and imported.config_hash == first.config_hash
    assert imported.lineage["source_version"] == first.version
    original, copied = reg.bundle_path(first.version), other.bundle_path(imported.version)
    assert original != copied
    for name in ("manifest.json", "item_vecs.npy", "vocab.json"):
        assert (copied / name).read_bytes() == (original / name).read_bytes()
    assert other.import_(exported) == imported  # importing twice is idempotent
    assert reg.import_(exported) == first  # and into the source registry, too


def test_bad_inputs_are_refused(reg: Registry, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleMismatchError, match="manifest.json is missing"):
        register(reg, empty, "data-0")
    (empty / "manifest.json").write_text("{not json")
    with pytest.raises(BundleMismatchError, match="corrupt"):
        register(reg, empty, "data-0")
    with pytest.raises(RegistryError, match="cannot import model file"):
        reg.import_(tmp_path / "missing.bentomodel")
    reg.path.write_text("{broken")
    with pytest.raises(RegistryError, match="registry.json is unreadable"):
        reg.versions()


def test_bentoml_home_defaults_under_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENTOML_HOME", "placeholder")  # restored after the test
    monkeypatch.delenv("BENTOML_HOME")
    reg = Registry(tmp_path / "root")
    assert os.environ["BENTOML_HOME"] == str((tmp_path / "root" / "bentoml").resolve())
    version = register(reg, make_bundle(tmp_path / "b"), "data-0")
    assert reg.bundle_path(version.version).is_relative_to(tmp_path / "root" / "bentoml")


def test_gate_decisions_are_recorded_pass_or_fail(two_versions) -> None:
    reg, first, _ = two_versions
    reg.set_stage("production", first.version)
    failed = reg.record_gate(gate_report("fail", reasons=("below 0.9",)))
    reg.record_gate(gate_report("pass"))
    decisions = reg.gate_decisions()
    assert [d.decision for d in decisions] == ["fail", "pass"] and decisions[0] == failed
    assert decisions[0].reasons == ("below 0.9",) and decisions[0].at < decisions[1].at
    assert decisions[1].production_metrics == {"recall@20": 0.28}
    production = reg.stage("production")
    assert production is not None and production.version == first.version  # stages untouched


def test_a_renamed_manifest_field_is_refused_with_its_name(reg: Registry, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "renamed")
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["data_fp"] = raw.pop("data_fingerprint")
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(
        BundleMismatchError, match=r"field 'data_fingerprint' is missing; unknown field 'data_fp'"
    ):
        register(reg, bundle, "data-0")
    assert reg.versions() == []


def test_a_gate_record_with_a_renamed_field_is_refused(two_versions) -> None:
    reg, _, _ = two_versions
    reg.record_gate(gate_report("pass"))
    state = json.loads(reg.path.read_text())
    state["gate_decisions"][0]["verdict"] = state["gate_decisions"][0].pop("decision")
    reg.path.write_text(json.dumps(state))
    with pytest.raises(RegistryError, match=r"gate_decisions\[0\].*'decision' is missing"):
        reg.gate_decisions()
