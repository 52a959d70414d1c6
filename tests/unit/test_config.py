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
    overrides = ["model.dim=16", "optim.max_minutes=2.5", "eval.ks=[5, 20]", "eval.metric=ndcg@20"]
    cfg = load(path, overrides)
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


@pytest.mark.parametrize(
    "override, message",
    [
        ("gate.metric=recal@20", r"gate\.metric 'recal@20' is not a metric; allowed: hr@K"),
        ("gate.metric=recall", r"gate\.metric 'recall' is not a metric"),
        ("gate.metric=recall@30", r"gate\.metric 'recall@30'.*eval\.ks \[5, 10, 20, 50\]"),
        ("eval.metric=ndcg@7", r"eval\.metric 'ndcg@7'.*allowed: ndcg@5, ndcg@10, ndcg@20"),
        ("eval.metric=mrr@10", r"eval\.metric 'mrr@10' is not a metric"),
        ("eval.metric=ndcg@ten", r"eval\.metric 'ndcg@ten'.*not one of eval\.ks"),
    ],
)
def test_metric_names_are_checked_at_load(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, [override])


def test_metric_must_be_in_the_configured_cut_offs() -> None:
    with pytest.raises(ConfigError, match=r"gate\.metric 'recall@20'.*eval\.ks \[5, 10\]"):
        load(None, ["eval.ks=[5, 10]", "eval.metric=ndcg@10"])
    cfg = load(None, ["eval.ks=[5, 30]", "eval.metric=hr@5", "gate.metric=recall@30"])
    assert (cfg.eval.metric, cfg.gate.metric) == ("hr@5", "recall@30")


@pytest.mark.parametrize("ks", ["[]", "[0, 10]", "[10, 10]"])
def test_cut_offs_must_be_distinct_and_positive(ks: str) -> None:
    with pytest.raises(ConfigError, match=r"eval\.ks must be distinct positive cut-offs"):
        load(None, [f"eval.ks={ks}"])


@pytest.mark.parametrize(
    "override, key, allowed",
    [
        (
            "model.name=sasrecc",
            "model.name",
            "'sasrec', 'comirec_sa', 'comirec_dr', 'mind'.*'itemknn'",
        ),
        (
            "loss.kind=softmax",
            "loss.kind",
            "'full_softmax', 'full_softmax_ihn', 'sampled_softmax'",
        ),
        ("loss.sampler=random", "loss.sampler", "'uniform', 'popularity'"),
        ("loss.readout=mean", "loss.readout", "'max', 'target_aware'"),
    ],
)
def test_model_and_loss_names_are_checked_at_load(override: str, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError, match=rf"config key '{key}'.*{allowed}"):
        load(None, [override])


def test_every_registered_name_is_a_config_choice() -> None:
    """The load-time checks cover exactly the names the registries can build."""
    from typing import get_args

    from mirec.config import RANKING_METRICS, LossConfig, ModelConfig
    from mirec.data.samplers import SAMPLERS
    from mirec.metrics import METRICS
    from mirec.models import FLOOR_MODELS, MODELS
    from mirec.objectives import registry

    def choices(model: type, name: str) -> set[str]:
        return set(get_args(model.model_fields[name].annotation))

    assert choices(ModelConfig, "name") == set(MODELS) | set(FLOOR_MODELS)
    assert choices(LossConfig, "kind") == set(registry.MAIN)
    assert choices(LossConfig, "sampler") == set(SAMPLERS)
    assert set(RANKING_METRICS) == set(METRICS)


def test_attention_heads_must_split_the_dimension() -> None:
    with pytest.raises(ConfigError, match=r"model\.dim 16 is not divisible by model\.num_heads 3"):
        load(None, ["model.name=sasrec", "model.dim=16", "model.num_heads=3"])
    assert load(None, ["model.name=mind", "model.dim=16", "model.num_heads=3"]).model.dim == 16
    assert load(None, ["model.dim=16", "model.num_heads=3", "model.num_layers=0"]).model.dim == 16


@pytest.mark.parametrize(
    "tree, message",
    [
        ({"gate": {"metric": "recal@20"}}, r"gate\.metric 'recal@20'"),
        ({"eval": {"metric": "ndcg@7"}}, r"eval\.metric 'ndcg@7'"),
        ({"model": {"name": "sasrec", "dim": 16, "num_heads": 3}}, r"not divisible"),
    ],
)
def test_pipeline_arguments_refuse_them_before_anything_runs(tree, message) -> None:
    from mirec.pipeline.arguments import pipeline_arguments

    with pytest.raises(ConfigError, match=message):
        pipeline_arguments("events", "registry", tree)
