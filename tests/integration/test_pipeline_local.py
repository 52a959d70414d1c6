"""The COMPILED retraining pipeline, loaded back from YAML, runs end to end with kfp.local.

Tiny demo data (150 users, 100 items), a one-epoch SASRec: every step runs for real (Great
Expectations, Spark, Feast with SQLite, torch, faiss, BentoML's store, the registry).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirec.cli.pipeline import compile_package
from mirec.pipeline.arguments import pipeline_arguments
from mirec.pipeline.demo import write_demo_data
from mirec.pipeline.io import read_raw_dataset_dir, write_dataset_dir
from mirec.pipeline.local import LocalRun, PipelineRunError, run_local
from mirec.pipeline.summary import format_summary, read_run
from mirec.registry import Registry
from mirec.schema import USER_ID

pytestmark = [pytest.mark.integration, pytest.mark.kfp, pytest.mark.slow]

TINY: dict[str, Any] = {
    "data": {"max_len": 20},
    "model": {"name": "sasrec", "dim": 16, "num_layers": 1, "num_heads": 1, "ffn_dim": 32},
    "optim": {"max_epochs": 1, "batch_size": 128, "num_threads": 1},
    "gate": {"metric": "recall@20", "min_value": 0.0, "max_regression": 0.05},
}
SIZES = {"num_users": 150, "num_items": 100, "new_users": 50}


@dataclass(frozen=True)
class Env:
    root: Path
    package: Path
    round1: Path
    round2: Path
    registry: Path

    def arguments(self, source: Path, **config: Any) -> dict[str, Any]:
        tree = {**TINY, **config}
        return pipeline_arguments(str(source), str(self.registry), tree)

    def run(self, name: str, source: Path, **config: Any) -> LocalRun:
        return run_local(self.arguments(source, **config), self.root / name, package=self.package)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("pipeline")
    patch = pytest.MonkeyPatch()
    patch.setenv("BENTOML_HOME", str(root / "bentoml"))
    patch.setenv("OMP_NUM_THREADS", "1")
    # The code version is part of the registry's idempotency key; pin it as CI's unchanging
    # checkout would (a shared working tree may change between two runs of this module).
    patch.setenv("MIREC_CODE_VERSION", "test-pipeline")
    yield Env(
        root=root,
        package=compile_package(root / "retraining.yaml"),
        round1=write_demo_data(root / "round1", 1, **SIZES),
        round2=write_demo_data(root / "round2", 2, **SIZES),
        registry=root / "registry",
    )
    patch.undo()


@pytest.fixture(scope="module")
def first(env: Env) -> LocalRun:
    return env.run("run1", env.round1)


def _stages(registry: Registry) -> tuple[int | None, int | None, list[int]]:
    prod, canary = registry.stage("production"), registry.stage("canary")
    return (
        prod.version if prod else None,
        canary.version if canary else None,
        [v.version for v in registry.versions()],
    )


def test_first_model_goes_straight_to_production(env: Env, first: LocalRun) -> None:
    tasks = read_run(first.run_dir)
    assert set(tasks) == {
        "validate-events",
        "build-features",
        "make-training-set",
        "validate-training-set",
        "train",
        "evaluate",
        "build-index",
        "deploy",
    }
    assert tasks["evaluate"].parameters["Output"] == "pass"
    assert tasks["evaluate"].artifacts["production_metrics"] == {}
    registry = Registry(env.registry)
    assert _stages(registry) == (1, None, [1])
    assert (registry.bundle_path(1) / "index.faiss").is_file()
    assert registry.get(1).lineage["pipeline_run_id"]
    assert [g.decision for g in registry.gate_decisions()] == ["pass"]
    summary = format_summary(first.run_dir, first.task_seconds)
    assert "deployed: version 1 -> production" in summary
    assert "expectations passed" in summary and "index: flat over 100 items" in summary
    assert set(first.task_seconds) == set(tasks)
    rows = int(tasks["make-training-set"].artifacts["stats"]["rows"])
    trained = tasks["train"].artifacts["metrics"]
    assert rows == trained["training_set_rows"] == trained["training_examples"] > 0
    assert f"training set: {rows} rows (Feast, point-in-time) = {rows} training examples" in summary


def test_rerun_with_the_same_inputs_is_idempotent(env: Env, first: LocalRun) -> None:
    again = env.run("run1_again", env.round1)
    deployment = read_run(again.run_dir)["deploy"].artifacts["deployment"]
    assert (deployment["version"], deployment["stage"]) == (1, "production")
    assert _stages(Registry(env.registry)) == (1, None, [1])


def test_failing_gate_skips_index_and_deploy(env: Env, first: LocalRun) -> None:
    strict = {**TINY["gate"], "min_value": 1.0}
    # a wider input than production's (max_len 20): each model is scored at its own width
    run = env.run("run2_strict", env.round2, gate=strict, data={"max_len": 50})
    tasks = read_run(run.run_dir)
    assert tasks["evaluate"].parameters["Output"] == "fail"
    assert "build-index" not in tasks and "deploy" not in tasks
    assert not (run.run_dir / "deploy").exists()
    production = tasks["evaluate"].artifacts["production_metrics"]
    assert "recall@20" in production  # production was evaluated on the challenger's split
    assert tasks["evaluate"].artifacts["gate_report"]["production_version"] == 1
    registry = Registry(env.registry)
    assert _stages(registry) == (1, None, [1])
    recorded = registry.gate_decisions()[-1]  # the failed gate is in the registry too
    assert recorded.decision == "fail" and recorded.production_version == 1
    assert recorded.production_metrics["recall@20"] == production["recall@20"]
    assert recorded.pipeline_run_id and recorded.data_fingerprint
    assert "gate: FAIL" in format_summary(run.run_dir)


def test_a_crashing_step_leaves_production_untouched(env: Env, first: LocalRun) -> None:
    arguments = env.arguments(env.round2)
    # an edit after pipeline_arguments checked it (16 is not divisible by 3): the first step
    # that reads the config crashes
    arguments["train_config"]["model"]["num_heads"] = 3
    with pytest.raises(PipelineRunError, match=r"step 'build-features'.*not divisible") as info:
        run_local(arguments, env.root / "run2_crash", package=env.package)
    assert "full log" in str(info.value)
    assert _stages(Registry(env.registry)) == (1, None, [1])


def test_failing_validation_stops_before_training(env: Env) -> None:
    source = env.root / "bad_events"
    events, items, users = read_raw_dataset_dir(env.round1)
    events[USER_ID] = events[USER_ID].astype(object)
    events.loc[events.index[::20], USER_ID] = None  # 5% null user ids, tolerance 1%
    write_dataset_dir(events, items, users, source)
    with pytest.raises(PipelineRunError, match="step 'validate-events'") as info:
        env.run("bad", source)
    message = str(info.value)
    assert "DataValidationError" in message and "null_user_id" in message
    assert ".report.json" in message  # the quarantine report's path
    runs = list((env.root / "bad" / "kfp").iterdir())
    assert len(runs) == 1 and not (runs[0] / "train").exists()
