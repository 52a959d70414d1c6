"""Optimiser and learning-rate schedule: AdamW with per-kind weight decay, warm-up and decay.

Parameters fall into three groups, each with its own decoupled weight decay:
embeddings (item, attribute and position tables), matrices (linear layers) and norms and
biases (LayerNorm gains, all biases). The schedule multiplies the base learning rate per step:
a linear warm-up, then constant, cosine or linear decay to ``min_lr_ratio`` over
``max_epochs`` epochs, or, with ``schedule_horizon: budget``, over the epochs that fit in the
``max_minutes`` budget (refitted after every epoch, see ``ScheduleHorizon``). ``ParamEMA``
keeps an exponential moving average of the weights, which evaluation and the bundle can use
instead of the last step's weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from mirec.config import OptimConfig


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, object]]:
    """AdamW parameter groups: embeddings, matrices, norms and biases, with their decay.

    ``embedding_weight_decay`` and ``norm_bias_weight_decay`` default to ``weight_decay`` when
    unset, so a config that sets only ``weight_decay`` decays every parameter alike.
    """
    embed_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    norm_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.LayerNorm)
        for p in m.parameters(recurse=False)
    }
    groups: dict[str, list[nn.Parameter]] = {"embeddings": [], "matrices": [], "norms_biases": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in embed_ids:
            groups["embeddings"].append(param)
        elif id(param) in norm_ids or name.endswith("bias") or param.dim() < 2:
            groups["norms_biases"].append(param)
        else:
            groups["matrices"].append(param)
    decay = {
        "embeddings": _or(cfg.embedding_weight_decay, cfg.weight_decay),
        "matrices": cfg.weight_decay,
        "norms_biases": _or(cfg.norm_bias_weight_decay, cfg.weight_decay),
    }
    return [
        {"params": params, "weight_decay": decay[kind], "name": kind}
        for kind, params in groups.items()
        if params
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups(model, cfg)`` at ``cfg.lr``."""
    return torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr)


def lr_factor(
    step: int, cfg: OptimConfig, steps_per_epoch: int, horizon_epochs: int | None = None
) -> float:
    """Multiplier of ``cfg.lr`` at optimiser step ``step`` (0-based).

    Args:
        step: optimiser steps taken so far.
        cfg: optimiser config (schedule, warm-up, floor).
        steps_per_epoch: optimiser steps in one epoch.
        horizon_epochs: epochs over which the decay runs (None: ``cfg.max_epochs``).

    Returns:
        A factor in [min_lr_ratio, 1] (warm-up ramps up from 1 / warm-up steps).
    """
    warmup = cfg.warmup_epochs * steps_per_epoch
    if warmup and step < warmup:
        return (step + 1) / warmup
    if cfg.lr_schedule == "constant":
        return 1.0
    epochs = cfg.max_epochs if horizon_epochs is None else horizon_epochs
    horizon = max(1, epochs * steps_per_epoch - warmup)
    progress = min(1.0, (step - warmup) / horizon)
    if cfg.lr_schedule == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        shape = 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


@dataclass
class ScheduleHorizon:
    """The epochs over which the learning rate decays, refitted to a time budget if asked.

    Args:
        epochs: the horizon (``max_epochs`` until fitted).
    """

    epochs: int

    def fit_to_budget(
        self, cfg: OptimConfig, epochs_done: int, seconds_used: float, epoch_seconds: float
    ) -> int:
        """Set the horizon to the epochs done plus those that fit in what is left of the budget.

        Called after every epoch when ``schedule_horizon`` is ``budget``, with the mean wall
        time (training and validation) of the epochs after the first as the pace, so the decay
        tracks the machine's real speed: the first epoch's start-up cost only shapes the first
        estimate. The result lies in [max(1, ``epochs_done``), ``max_epochs``]; equal to
        ``epochs_done`` means stop.

        Args:
            cfg: optimiser config (``max_minutes``, ``max_epochs``).
            epochs_done: epochs finished so far.
            seconds_used: wall seconds of those epochs.
            epoch_seconds: the pace, seconds per epoch.
        """
        left = 60 * (cfg.max_minutes or 0.0) - seconds_used
        fit = epochs_done + int(max(left, 0.0) // max(epoch_seconds, 1e-9))
        self.epochs = max(1, epochs_done, min(cfg.max_epochs, fit))
        return self.epochs


def build_scheduler(
    opt: torch.optim.Optimizer,
    cfg: OptimConfig,
    steps_per_epoch: int,
    horizon: ScheduleHorizon | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR applying ``lr_factor`` over ``horizon`` (default ``max_epochs``)."""
    span = horizon if horizon is not None else ScheduleHorizon(cfg.max_epochs)
    per_epoch = max(1, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, cfg, per_epoch, span.epochs)
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


class ParamEMA:
    """Exponential moving average of a model's parameters, swapped in for evaluation.

    After every optimiser step ``update()`` moves the average towards the current weights:
    ``avg = decay * avg + (1 - decay) * weights``. ``swapped_in()`` makes the model use the
    average (for validation, the best-state copy and the bundle) and restores the raw weights
    on exit, so training continues from them.

    Args:
        model: the model whose trainable parameters are averaged.
        decay: the average's decay per step, in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average."""
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1 - self.decay)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within the block the model's parameters hold the average."""
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.params], self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], raw)

    def state_dict(self) -> list[torch.Tensor]:
        """The averaged tensors, in parameter order (for checkpoints)."""
        return [a.clone() for a in self.average]

    def load_state_dict(self, state: list[torch.Tensor]) -> None:
        """Restore the averaged tensors saved by ``state_dict``."""
        with torch.no_grad():
            torch._foreach_copy_(self.average, state)
