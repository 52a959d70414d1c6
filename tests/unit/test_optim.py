"""Optimiser parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from mirec.config import ModelConfig, OptimConfig
from mirec.models import build_model
from mirec.training.optim import (
    ParamEMA,
    ScheduleHorizon,
    build_optimizer,
    build_scheduler,
    lr_factor,
    parameter_groups,
)


def _sasrec() -> torch.nn.Module:
    return build_model(ModelConfig(name="sasrec", dim=8, ffn_dim=16), 20, None, 5)


def test_groups_cover_every_parameter_once_with_their_decay() -> None:
    model = _sasrec()
    cfg = OptimConfig(weight_decay=0.5, embedding_weight_decay=0.1, norm_bias_weight_decay=0.0)
    groups = {g["name"]: g for g in parameter_groups(model, cfg)}
    ids = [id(p) for g in groups.values() for p in g["params"]]  # type: ignore[attr-defined]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert len(ids) == len(set(ids))
    assert groups["embeddings"]["weight_decay"] == 0.1
    assert groups["matrices"]["weight_decay"] == 0.5
    assert groups["norms_biases"]["weight_decay"] == 0.0
    embeds = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert {id(p) for p in groups["embeddings"]["params"]} == embeds  # type: ignore[attr-defined]
    assert all(p.dim() == 2 for p in groups["matrices"]["params"])  # type: ignore[attr-defined]


def test_unset_group_decay_follows_weight_decay() -> None:
    groups = parameter_groups(_sasrec(), OptimConfig(weight_decay=0.3))
    assert {g["weight_decay"] for g in groups} == {0.3}


def test_constant_schedule_with_warmup() -> None:
    cfg = OptimConfig(warmup_epochs=1, max_epochs=3)
    assert [lr_factor(s, cfg, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(11, cfg, 4) == 1.0


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_reaches_the_floor_at_max_epochs(kind: str) -> None:
    cfg = OptimConfig(lr_schedule=kind, max_epochs=10, min_lr_ratio=0.1)
    factors = [lr_factor(s, cfg, 5) for s in range(60)]
    assert factors[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))
    assert factors[50] == pytest.approx(0.1) and factors[59] == pytest.approx(0.1)
    mid = 0.1 + 0.9 * (0.5 * (1 + math.cos(math.pi * 0.5)) if kind == "cosine" else 0.5)
    assert factors[25] == pytest.approx(mid)


def test_scheduler_drives_the_optimizer_learning_rate() -> None:
    model = _sasrec()
    cfg = OptimConfig(lr=0.01, lr_schedule="linear", max_epochs=2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=2)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.01, 0.0075, 0.005, 0.0025])


def test_horizon_fits_the_budget_within_max_epochs() -> None:
    cfg = OptimConfig(max_minutes=1.0, max_epochs=50)
    assert ScheduleHorizon(50).fit_to_budget(cfg, 1, 9.0, epoch_seconds=7.0) == 8  # 1 + 51 // 7
    assert ScheduleHorizon(50).fit_to_budget(cfg, 1, 1.0, epoch_seconds=0.5) == 50  # capped
    assert ScheduleHorizon(50).fit_to_budget(cfg, 1, 100.0, epoch_seconds=100.0) == 1  # stop
    assert ScheduleHorizon(50).fit_to_budget(cfg, 0, 0.0, epoch_seconds=100.0) == 1  # >= 1
    assert ScheduleHorizon(50).fit_to_budget(cfg, 5, 58.0, epoch_seconds=1.0) == 7  # refit


def test_fitted_horizon_moves_the_decay_end() -> None:
    model = _sasrec()
    cfg = OptimConfig(lr=0.01, lr_schedule="linear", max_epochs=10, max_minutes=1.0)
    opt = build_optimizer(model, cfg)
    horizon = ScheduleHorizon(cfg.max_epochs)
    sched = build_scheduler(opt, cfg, steps_per_epoch=2, horizon=horizon)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 19 / 20)  # over 10 epochs
    horizon.fit_to_budget(cfg, 0, 0.0, epoch_seconds=30.0)  # 2 epochs fit
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 2 / 4)  # step 2 of 4


def test_ema_averages_steps_and_swaps_back() -> None:
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    ema = ParamEMA(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.fill_(4.0)
    ema.update()  # 0.5 * 0 + 0.5 * 4
    ema.update()  # 0.5 * 2 + 0.5 * 4
    with ema.swapped_in():
        assert torch.equal(layer.weight, torch.full((1, 2), 3.0))
    assert torch.equal(layer.weight, torch.full((1, 2), 4.0))
    other = ParamEMA(layer, decay=0.5)
    other.load_state_dict(ema.state_dict())
    with other.swapped_in():
        assert torch.equal(layer.weight, torch.full((1, 2), 3.0))
