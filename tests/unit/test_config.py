"""Typed config: defaults, YAML, overrides, unknown keys named in the error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mirec.config import TrainConfig, from_dict, load
from mirec.errors import ConfigError


def test_defaults_are_frozen() -> None:
    cfg = load()
    assert cfg == TrainConfig()
    with pytest.raises(ValidationError):
        cfg.seed = 3  # type: ignore[misc]


def test_yaml_then_overrides(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: mind, dim: 32}\noptim: {lr: 0.01}\n")
    cfg = load(path, ["model.dim=16", "optim.max_minutes=2.5", "eval.ks=[5, 20]"])
    assert cfg.model.name == "mind"
    assert cfg.model.dim == 16
    assert cfg.optim.lr == 0.01
    assert cfg.optim.max_minutes == 2.5
    assert cfg.eval.ks == (5, 20)


@pytest.mark.parametrize(
    "tree, key",
    [
        ({"modle": {}}, "modle"),
        ({"model": {"dimm": 3}}, "model.dimm"),
        ({"loss": {"x": 1}}, "loss.x"),
    ],
)
def test_unknown_key_is_named(tree, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(tree)


def test_unknown_override_key_is_named() -> None:
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load(None, ["optim.learning_rate=0.1"])


def test_bad_value_names_key() -> None:
    with pytest.raises(ConfigError, match="model.name"):
        load(None, ["model.name=transformerxl"])
    with pytest.raises(ConfigError, match="not of the form"):
        load(None, ["model.dim"])


def test_budget_horizon_needs_a_budget() -> None:
    with pytest.raises(ConfigError, match="max_minutes"):
        load(None, ["optim.schedule_horizon=budget"])
    assert load(None, ["optim.schedule_horizon=budget", "optim.max_minutes=3"]).optim.max_minutes


def test_derived_values() -> None:
    cfg = load(None, ["optim.batch_size=64"])
    assert cfg.num_negatives == 640
    assert load(None, ["model.name=sasrec", "model.num_interests=4"]).model.interests == 1
    assert load(None, ["model.name=mind"]).model.interests == 4


def test_round_trip_through_dump() -> None:
    cfg = load(None, ["model.name=comirec_dr", "data.protocol=A"])
    assert from_dict(cfg.model_dump(mode="json")) == cfg
