"""The retraining pipeline compiles to IR YAML that loads back, with the wiring we mean."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.images import DEFAULT_IMAGE, IMAGE_ENV
from mirec.cli import main
from mirec.cli.pipeline import compile_package

pytestmark = [pytest.mark.integration, pytest.mark.kfp]

ROOT = Path(__file__).resolve().parents[2]
STEPS = [
    "validate_events",
    "build_features",
    "make_training_set",
    "validate_training_set",
    "train",
    "evaluate",
    "build_index",
    "deploy",
]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = compile_package(tmp_path_factory.mktemp("compile") / "retraining.yaml")
    return dict(yaml.safe_load(path.read_text()))


def _tasks(spec: dict[str, Any]) -> dict[str, Any]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_one_component_per_file_named_by_its_verb() -> None:
    from kfp.dsl.python_component import PythonComponent

    for name in STEPS:
        module = importlib.import_module(f"components.{name}")
        component = getattr(module, name)
        assert isinstance(component, PythonComponent), name
        assert component.component_spec.implementation.container.image == DEFAULT_IMAGE


def test_compiled_yaml_loads_back_as_a_pipeline(tmp_path: Path) -> None:
    from kfp import components

    path = compile_package(tmp_path / "p.yaml")
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == "mirec-retraining"
    inputs = set(loaded.component_spec.inputs or {})
    assert inputs == {
        "source",
        "registry_root",
        "train_config",
        "num_workers",
        "max_bad_fraction",
        "feature_store",
        "columns",
    }


def test_every_step_runs_in_the_image_without_pip(spec: dict[str, Any]) -> None:
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == len(STEPS)
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == DEFAULT_IMAGE
        assert "pip install" not in " ".join(container["command"] + container.get("args", []))


def test_deploy_and_index_run_only_when_the_gate_passes(spec: dict[str, Any]) -> None:
    tasks = _tasks(spec)
    assert {"build-index", "deploy"} <= set(tasks)
    root = spec["root"]["dag"]["tasks"]
    assert "deploy" not in root and "build-index" not in root
    condition = next(t for t in root.values() if t.get("triggerPolicy"))
    assert "evaluate-Output" in condition["triggerPolicy"]["condition"]
    assert "'pass'" in condition["triggerPolicy"]["condition"]


def test_stateful_steps_never_use_the_cache(spec: dict[str, Any]) -> None:
    tasks = _tasks(spec)
    for name in ("validate-events", "build-features", "evaluate", "deploy"):
        assert not tasks[name].get("cachingOptions", {}).get("enableCache"), name
    assert tasks["train"]["dependentTasks"] == sorted(
        ["build-features", "make-training-set", "validate-events", "validate-training-set"]
    )


def test_image_is_a_compile_time_setting(tmp_path: Path) -> None:
    out = tmp_path / "env.yaml"
    env = {**os.environ, IMAGE_ENV: "example.org/mirec@sha256:abc"}
    subprocess.run(
        [sys.executable, "-m", "pipelines.compile", "--out", str(out)],
        check=True,
        env=env,
        cwd=ROOT,
    )
    images = {
        e["container"]["image"]
        for e in yaml.safe_load(out.read_text())["deploymentSpec"]["executors"].values()
    }
    assert images == {"example.org/mirec@sha256:abc"}
    flag = tmp_path / "flag.yaml"
    assert main(["pipeline", "compile", "--out", str(flag), "--image", "example.org/x:1"]) == 0
    images = {
        e["container"]["image"]
        for e in yaml.safe_load(flag.read_text())["deploymentSpec"]["executors"].values()
    }
    assert images == {"example.org/x:1"}


def test_shared_volume_is_mounted_into_every_step(tmp_path: Path) -> None:
    from kfp import components

    path = compile_package(tmp_path / "pvc.yaml", pvc="mirec-data", mount_path="/data")
    spec, platform = yaml.safe_load_all(path.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    assert {str(e["pvcMount"]) for e in executors.values()} == {
        str([{"mountPath": "/data", "constant": "mirec-data"}])
    }
    assert components.load_component_from_file(str(path)).name == "mirec-retraining"


def _ints_to_floats(tree: Any) -> Any:
    """What a protobuf Struct makes of a config tree: every number a float."""
    if isinstance(tree, dict):
        return {k: _ints_to_floats(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_ints_to_floats(v) for v in tree]
    return float(tree) if isinstance(tree, int) and not isinstance(tree, bool) else tree


def test_config_parameter_survives_kfp_structs() -> None:
    from mirec.config import TrainConfig, from_dict
    from mirec.pipeline.arguments import kfp_config_tree

    tree = kfp_config_tree({"optim": {"max_epochs": 3, "max_minutes": None}})
    assert "max_minutes" not in tree["optim"] and "num_negatives" not in tree["loss"]
    assert from_dict(_ints_to_floats(tree)) == TrainConfig().model_copy(
        update={"optim": TrainConfig().optim.model_copy(update={"max_epochs": 3})}
    )


def test_bad_pipeline_arguments_fail_before_anything_runs() -> None:
    from mirec.errors import ConfigError
    from mirec.pipeline.arguments import pipeline_arguments

    with pytest.raises(ConfigError, match=r"optim.grad_clip.*null"):
        pipeline_arguments("src", "reg", {"optim": {"grad_clip": None}})
    with pytest.raises(ConfigError, match="unknown config key 'optim.epochs'"):
        pipeline_arguments("src", "reg", {"optim": {"epochs": 3}})
    with pytest.raises(ConfigError, match="feature_store has unknown keys"):
        pipeline_arguments("src", "reg", {}, feature_store={"online": "redis"})
    with pytest.raises(ConfigError, match="num_workers"):
        pipeline_arguments("src", "reg", {}, num_workers=0)
