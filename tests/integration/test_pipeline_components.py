"""The components' Python functions at toy size, with stand-in artifacts (no kfp.local).

Real parts: Great Expectations, torch training, faiss, BentoML's model store and the registry.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from components.build_features import build_features
from components.build_index import build_index
from components.deploy import deploy
from components.evaluate import evaluate
from components.make_training_set import make_training_set
from components.train import train
from components.validate_events import validate_events
from mirec.errors import DataValidationError
from mirec.pipeline.demo import write_demo_data
from mirec.pipeline.io import EVENTS_FILE, read_raw_dataset_dir, write_dataset_dir
from mirec.registry import Registry, deploy_version
from mirec.schema import USER_ID

pytestmark = [pytest.mark.integration, pytest.mark.kfp]

TINY = {
    "data": {"max_len": 20},
    "model": {"name": "sasrec", "dim": 16, "num_layers": 1, "num_heads": 1, "ffn_dim": 32},
    "optim": {"max_epochs": 1, "batch_size": 128, "num_threads": 1},
    "gate": {"metric": "recall@20", "min_value": 0.0, "max_regression": 0.05},
}


class FakeArtifact:
    """What a component sees of an artifact: a local path, metadata, ``log_metric``."""

    def __init__(self, path: Path) -> None:
        self.path = self.uri = str(path)
        self.metadata: dict[str, Any] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.metadata[name] = value


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("components")
    patch = pytest.MonkeyPatch()
    patch.setenv("BENTOML_HOME", str(root / "bentoml"))
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def checked(work: Path) -> FakeArtifact:
    """validate_events on the round-1 demo data: the clean dataset directory."""
    source = write_demo_data(work / "source", 1, num_users=120, num_items=80)
    events = FakeArtifact(work / "events")
    checks = FakeArtifact(work / "checks")
    validate_events.python_func(
        source=str(source),
        max_bad_fraction=0.01,
        events=events,
        quarantine=FakeArtifact(work / "quarantine"),
        data_docs=FakeArtifact(work / "docs"),
        checks=checks,
    )
    assert checks.metadata["rows_quarantined"] == 0.0
    assert checks.metadata["suite_success"] == 1.0
    assert Path(events.metadata["data_docs"]).is_file()
    return events


def _features(
    work: Path, name: str, events: FakeArtifact, config: dict[str, Any]
) -> tuple[FakeArtifact, FakeArtifact]:
    """The real feature build (Spark, Feast) and its point-in-time training set for ``config``."""
    features = FakeArtifact(work / f"{name}_features")
    build_features.python_func(
        events=events,
        train_config=config,
        registry_root=str(work / f"{name}_empty_registry"),
        feature_store={},
        features=features,
        feature_metrics=FakeArtifact(work / f"{name}_feature_metrics"),
    )
    training_set = FakeArtifact(work / f"{name}_training_set")
    make_training_set.python_func(
        features=features,
        events=events,
        train_config=config,
        training_set=training_set,
        stats=FakeArtifact(work / f"{name}_training_set_stats"),
    )
    return features, training_set


@pytest.fixture(scope="module")
def tiny_features(work: Path, checked: FakeArtifact) -> tuple[FakeArtifact, FakeArtifact]:
    return _features(work, "tiny", checked, TINY)


@pytest.fixture(scope="module")
def model(
    work: Path, checked: FakeArtifact, tiny_features: tuple[FakeArtifact, FakeArtifact]
) -> FakeArtifact:
    out = FakeArtifact(work / "model")
    metrics = FakeArtifact(work / "train_metrics")
    train.python_func(
        events=checked,
        features=tiny_features[0],
        training_set=tiny_features[1],
        train_config=TINY,
        num_workers=1,
        model=out,
        training_log=FakeArtifact(work / "train_log"),
        metrics=metrics,
    )
    assert (Path(out.path) / "manifest.json").is_file()
    assert all(isinstance(v, float) for v in metrics.metadata.values())
    assert "valid/recall@20" in metrics.metadata
    return out


def _gate(
    work: Path, name: str, model: FakeArtifact, events: FakeArtifact, registry: Path
) -> tuple[str, FakeArtifact, FakeArtifact, FakeArtifact]:
    ours, theirs, report = (FakeArtifact(work / f"{name}_{k}") for k in ("c", "p", "gate"))
    decision = evaluate.python_func(
        model=model,
        events=events,
        registry_root=str(registry),
        run_id=f"run-{name}",
        challenger_metrics=ours,
        production_metrics=theirs,
        gate_report=report,
    )
    return decision, ours, theirs, report


def _with_config(src: FakeArtifact, dst: Path, **changes: Any) -> FakeArtifact:
    """A copy of a bundle whose manifest config differs (e.g. the gate's threshold)."""
    shutil.copytree(src.path, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        manifest["config"][section][key] = value
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return FakeArtifact(dst)


def test_validate_events_quarantines_and_fails_above_the_tolerance(work: Path) -> None:
    source = write_demo_data(work / "bad_source", 1, num_users=60, num_items=40)
    events, items, users = read_raw_dataset_dir(source)
    events[USER_ID] = events[USER_ID].astype(object)
    events.loc[events.index[:3], USER_ID] = None  # ~0.3% bad rows: tolerated
    write_dataset_dir(events, items, users, source)
    checks, quarantine = FakeArtifact(work / "q_checks"), FakeArtifact(work / "q")
    kwargs = {
        "source": str(source),
        "events": FakeArtifact(work / "q_events"),
        "quarantine": quarantine,
        "data_docs": FakeArtifact(work / "q_docs"),
        "checks": checks,
    }
    validate_events.python_func(max_bad_fraction=0.01, **kwargs)
    assert checks.metadata["rows_quarantined"] == 3.0
    assert list(Path(quarantine.path).rglob("*.parquet"))
    with pytest.raises(DataValidationError, match=r"report: .*\.report\.json"):
        validate_events.python_func(max_bad_fraction=0.001, **kwargs)


def test_validate_events_fails_with_the_data_docs_page(work: Path) -> None:
    source = work / "empty_source"
    events, items, users = read_raw_dataset_dir(write_demo_data(source, 1, num_users=5))
    write_dataset_dir(events.iloc[:0], items, users, source)
    with pytest.raises(DataValidationError, match=r"\.html"):
        validate_events.python_func(
            source=str(source),
            max_bad_fraction=0.01,
            events=FakeArtifact(work / "e_events"),
            quarantine=FakeArtifact(work / "e_q"),
            data_docs=FakeArtifact(work / "e_docs"),
            checks=FakeArtifact(work / "e_checks"),
        )
    assert not (work / "e_events" / EVENTS_FILE).exists()


def test_gate_without_production_checks_thresholds_only(
    work: Path, model: FakeArtifact, checked: FakeArtifact
) -> None:
    decision, ours, theirs, report = _gate(work, "first", model, checked, work / "reg_first")
    assert decision == "pass"
    assert ours.metadata["recall@20"] >= 0.0 and theirs.metadata == {}
    assert report.metadata["production_version"] is None
    strict = _with_config(model, work / "strict", gate__min_value=1.0)
    decision, _, _, report = _gate(work, "strict", strict, checked, work / "reg_first")
    assert decision == "fail"
    assert "threshold" in report.metadata["reasons"][0]
    recorded = Registry(work / "reg_first").gate_decisions()  # pass and fail both recorded
    assert [(g.decision, g.pipeline_run_id) for g in recorded] == [
        ("pass", "run-first"),
        ("fail", "run-strict"),
    ]


def test_index_then_deploy_production_canary_and_idempotence(
    work: Path, model: FakeArtifact, checked: FakeArtifact
) -> None:
    registry_root = work / "registry"
    indexed, index_metrics = FakeArtifact(work / "indexed"), FakeArtifact(work / "index_m")
    build_index.python_func(
        model=model, events=checked, indexed_model=indexed, index_metrics=index_metrics
    )
    assert (Path(indexed.path) / "index.faiss").is_file()
    assert indexed.metadata["index"]["kind"] == "flat"
    assert index_metrics.metadata["index_recall@50"] == 1.0

    def run_deploy(bundle: FakeArtifact, name: str) -> tuple[str, dict[str, Any]]:
        _, _, _, report = _gate(work, name, bundle, checked, registry_root)
        out = FakeArtifact(work / f"{name}_deployment")
        stage = deploy.python_func(
            model=bundle,
            gate_report=report,
            features=FakeArtifact(work / "features"),
            registry_root=str(registry_root),
            run_id=f"run-{name}",
            run_name=name,
            deployment=out,
        )
        return stage, out.metadata

    stage, meta = run_deploy(indexed, "first")
    assert (stage, meta["version"], meta["production_version"]) == ("production", 1, 1)
    stage, meta = run_deploy(indexed, "again")  # same data, config and code
    assert (stage, meta["version"]) == ("production", 1)
    other = _with_config(indexed, work / "other", optim__lr=0.002)
    _, ours, theirs, report = _gate(work, "vs_prod", other, checked, registry_root)
    assert report.metadata["production_version"] == 1
    assert theirs.metadata["recall@20"] == pytest.approx(ours.metadata["recall@20"])
    stage, meta = run_deploy(other, "second")
    assert (stage, meta["version"], meta["canary_version"]) == ("canary", 2, 2)
    registry = Registry(registry_root)
    assert [v.version for v in registry.versions()] == [1, 2]
    lineage = registry.get(2).lineage
    assert lineage["pipeline_run_id"] == "run-second"
    assert lineage["feature_repo"] == str(work / "features")
    assert lineage["gate"]["decision"] == "pass"
    assert lineage["production_metrics"]["recall@20"] == pytest.approx(ours.metadata["recall@20"])
    assert pd.notna(lineage["index"]["recall_at_k"])


def test_train_component_runs_ddp_when_asked(
    work: Path, checked: FakeArtifact, tiny_features: tuple[FakeArtifact, FakeArtifact]
) -> None:
    out, metrics = FakeArtifact(work / "ddp_model"), FakeArtifact(work / "ddp_metrics")
    train.python_func(
        events=checked,
        features=tiny_features[0],
        training_set=tiny_features[1],
        train_config=TINY,
        num_workers=2.0,  # kfp.local hands ints back as floats
        model=out,
        training_log=FakeArtifact(work / "ddp_log"),
        metrics=metrics,
    )
    assert out.metadata["num_workers"] == 2
    assert (Path(out.path) / "manifest.json").is_file()
    assert "valid/recall@20" in metrics.metadata


def test_gate_scores_a_production_model_of_another_max_len(
    work: Path, model: FakeArtifact, checked: FakeArtifact
) -> None:
    """Production trained with max_len 20, the challenger with 50: each reads its own width."""
    registry_root = work / "reg_widths"
    registry = Registry(registry_root)
    manifest = json.loads((Path(model.path) / "manifest.json").read_text())
    production = registry.register(
        model.path,
        metrics={},
        data_fingerprint=manifest["data_fingerprint"],
        config=manifest["config"],
        code_version="test",
    )
    deploy_version(registry, production.version)
    wide = FakeArtifact(work / "wide_model")
    wide_config = {**TINY, "data": {"max_len": 50}}
    wide_features, wide_training_set = _features(work, "wide", checked, wide_config)
    train.python_func(
        events=checked,
        features=wide_features,
        training_set=wide_training_set,
        train_config=wide_config,
        num_workers=1,
        model=wide,
        training_log=FakeArtifact(work / "wide_log"),
        metrics=FakeArtifact(work / "wide_metrics"),
    )
    decision, ours, theirs, report = _gate(work, "wide", wide, checked, registry_root)
    assert decision in ("pass", "fail") and report.metadata["production_version"] == 1
    assert theirs.metadata["num_users"] == ours.metadata["num_users"] > 0
    # the same held-out users and vocabulary as production's own test split, at its own width
    assert theirs.metadata["recall@20"] == pytest.approx(manifest["metrics"]["test/recall@20"])
    assert theirs.metadata["ndcg@10"] == pytest.approx(manifest["metrics"]["test/ndcg@10"])
