"""train(cfg, dataset, out_dir) -> TrainResult: seeded, early-stopped, checkpointed, resumable.

The loop trains one TwoTower with the configured loss, evaluates full ranking on the validation
users after every epoch, keeps the best epoch, and writes a model bundle, a per-epoch metrics log
(``metrics.jsonl``) and a training curve (``training_curve.png``). With ``num_workers > 1`` it runs
under ``torchrun`` with DistributedDataParallel (gloo on CPU, nccl on GPUs): every rank draws the
same global batch and takes its share of the rows; rank 0 alone evaluates, logs and checkpoints.
``optim.device`` places the model and every batch (``mirec.training.device``). The checkpoint
holds every random state (per rank), so a resumed run continues exactly as an uninterrupted one.
The floors (``model.name`` popularity / itemknn) are fitted from the training sequences in one
pass instead of trained, and bundled the same way. A MAIL zero-shot tower is refitted and its
blend chosen on the validation users after the ranking tower is trained
(``mirec.training.zero_shot``), before the bundle is written.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mirec.bundle import ModelBundle
from mirec.config import EvalConfig, TrainConfig
from mirec.data.batches import SeqBatch, num_train_rows, train_batches
from mirec.data.samplers import NegativeSampler, build_sampler
from mirec.data.splits import Split
from mirec.evaluate import evaluate_scorer
from mirec.models import build_model
from mirec.models.baselines import FLOOR_MODELS, fit_floor
from mirec.models.two_tower import TwoTower
from mirec.objectives import compute_loss, resolve_matmul_dtype
from mirec.objectives.cold_start import prepare_cold_start
from mirec.objectives.epoch_hooks import before_epoch, epoch_diagnostics, start_centres
from mirec.training.device import (
    DeviceScorer,
    move_batch,
    new_generator,
    resolve_device,
    rng_state,
    set_rng_state,
)
from mirec.training.optim import ParamEMA, ScheduleHorizon, build_optimizer, build_scheduler
from mirec.training.prepare import Prepared
from mirec.training.result import TrainResult, peak_rss_mb, write_result
from mirec.training.zero_shot import choose_zero_shot

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _LossModule(nn.Module):
    """Wraps model + loss in one forward() so DistributedDataParallel can hook it."""

    def __init__(
        self,
        model: TwoTower,
        cfg: TrainConfig,
        sampler: NegativeSampler | None,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.model, self.cfg, self.sampler = model, cfg, sampler
        self.generator = new_generator(cfg.seed, device)

    def forward(self, batch: SeqBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = compute_loss(
            self.model, batch, self.cfg.loss, self.sampler, self.generator, self.cfg.num_negatives
        )
        return out.total, out.parts


def shard_batch(batch: SeqBatch, rank: int, world: int) -> SeqBatch:
    """Rows rank, rank+world, ... of a global batch."""
    if world == 1:
        return batch
    pick = slice(rank, None, world)
    return SeqBatch(
        batch.hist_item_ids[pick],
        batch.hist_len[pick],
        batch.target_item_ids[pick],
        None if batch.pos_targets is None else batch.pos_targets[pick],
        None if batch.user_idx is None else batch.user_idx[pick],
    )


@dataclass
class _State:
    epoch: int = 0
    best_value: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    elapsed: float = 0.0  # seconds of training steps (examples per second)
    wall: float = 0.0  # seconds of the loop: training and validation (the max_minutes budget)
    first_epoch_wall: float = 0.0  # epoch 0 carries start-up costs: kept out of the pace
    last_epoch_wall: float = 0.0
    examples: int = 0
    history: list[dict[str, float]] | None = None
    best_state: dict[str, torch.Tensor] | None = None


@dataclass
class _Stepper:
    """Optimiser, learning-rate schedule and optional weight average, stepped together."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: ParamEMA | None
    horizon: ScheduleHorizon

    def step(self) -> None:
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update()

    def evaluation_weights(self) -> AbstractContextManager[None]:
        """Context in which the model holds the weights to validate and keep."""
        return self.ema.swapped_in() if self.ema is not None else nullcontext()

    def state_dict(self) -> dict[str, Any]:
        return {
            "optim": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "horizon": {"epochs": self.horizon.epochs},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optim"])
        if "sched" in state:
            self.sched.load_state_dict(state["sched"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if "horizon" in state:
            self.horizon.epochs = state["horizon"]["epochs"]


def _make_stepper(model: nn.Module, cfg: TrainConfig, split: Split, causal: bool) -> _Stepper:
    opt = build_optimizer(model, cfg.optim)
    horizon = ScheduleHorizon(cfg.optim.max_epochs)
    sched = build_scheduler(opt, cfg.optim, _steps_per_epoch(cfg, split, causal), horizon)
    ema = ParamEMA(model, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
    return _Stepper(opt, sched, ema, horizon)


def _save_checkpoint(
    path: Path, model: nn.Module, stepper: _Stepper, st: _State, rng: list[dict[str, Any]]
) -> None:
    """Weights, optimiser, schedule, loop state and ``rng``: every rank's random states."""
    tmp = path.with_suffix(".tmp")
    state = {"model": model.state_dict(), **stepper.state_dict(), "state": st.__dict__, "rng": rng}
    torch.save(state, tmp)
    tmp.replace(path)


def _load_checkpoint(
    path: Path, module: _LossModule, stepper: _Stepper, device: torch.device, rank: int
) -> _State:
    """Restore a checkpoint, this rank's random states included."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    module.model.load_state_dict(ckpt["model"])
    stepper.load_state_dict(ckpt)
    states = ckpt.get("rng") or []
    if not states:
        log.warning("%s holds no random states: the resumed run is not exact", path)
    else:
        if rank >= len(states):
            log.warning(
                "%s was written by %d process(es): rank %d reuses rank 0's random states",
                path,
                len(states),
                rank,
            )
        set_rng_state(states[rank] if rank < len(states) else states[0], module.generator, device)
    log.info("resumed from %s at epoch %d", path, ckpt["state"]["epoch"])
    return _State(**ckpt["state"])


def _validate(
    model: TwoTower, split: Split, cfg: EvalConfig, device: torch.device
) -> dict[str, float]:
    return evaluate_scorer(_scorer(model, device), split.valid, cfg, split.max_len)


def _scorer(model: TwoTower, device: torch.device) -> TwoTower | DeviceScorer:
    """What evaluation ranks with: the model itself on the CPU, else a device adapter."""
    return model if device.type == "cpu" else DeviceScorer(model, device)


def _run_epoch(
    module: nn.Module,
    stepper: _Stepper,
    cfg: TrainConfig,
    split: Split,
    causal: bool,
    epoch: int,
    rank: int,
    world: int,
    progress: bool,
    device: torch.device,
) -> tuple[float, int]:
    module.train()
    mode = _row_mode(cfg, causal)
    rng = np.random.default_rng([cfg.seed, epoch])
    total = int(sum(max(len(s) - 1, 0) for s in split.train.sequences))
    batches = train_batches(
        split.train, cfg.optim.batch_size, split.max_len, mode=mode, generator=rng
    )
    bar = tqdm(
        total=total,
        desc=f"epoch {epoch}",
        unit="ex",
        disable=not progress or rank != 0,
        leave=False,
    )
    losses, seen = [], 0
    for batch in batches:
        local = move_batch(shard_batch(batch, rank, world), device)
        loss, _ = module(local)
        stepper.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
        stepper.step()
        losses.append(float(loss.detach()))
        rows = _num_examples(batch)
        seen += rows
        bar.update(rows)
    bar.close()
    return float(np.mean(losses)) if losses else float("nan"), seen


def _row_mode(cfg: TrainConfig, causal: bool) -> Literal["sequence", "prefix"]:
    """Training rows: whole sequences with a loss at every position (causal models, unless
    ``loss.causal_targets`` is ``prefixes``), or one row per prefix, scored at its newest item."""
    return "sequence" if causal and cfg.loss.causal_targets == "all_positions" else "prefix"


def _steps_per_epoch(cfg: TrainConfig, split: Split, causal: bool) -> int:
    """Optimiser steps in one epoch (batches of ``train_batches``)."""
    rows = num_train_rows(split.train, _row_mode(cfg, causal))
    return max(1, -(-rows // cfg.optim.batch_size))


def _num_examples(batch: SeqBatch) -> int:
    """Training examples (next-item targets) in a batch: every real target position."""
    if batch.pos_targets is not None:
        return int((batch.pos_targets != 0).sum())
    return int((batch.target_item_ids != 0).sum())


def train_worker(
    cfg: TrainConfig,
    prep: Prepared,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
) -> TrainResult:
    """The training loop of one process (rank ``rank`` of ``world``) on ``device``.

    ``device`` None resolves ``optim.device`` for a single process.
    """
    out.mkdir(parents=True, exist_ok=True)
    if cfg.optim.num_threads:
        torch.set_num_threads(cfg.optim.num_threads)
    seed_everything(cfg.seed)
    if cfg.model.name in FLOOR_MODELS:
        return _fit_floor(cfg, prep, out, rank)
    device = resolve_device(cfg.optim.device) if device is None else device
    split = prep.split
    model = build_model(cfg.model, prep.vocab.size, _attrs(prep.item_attributes), cfg.data.max_len)
    prepare_cold_start(model, split.item_counts, prep.user_profiles, cfg)  # no-op without them
    model.to(device)
    sampler = (
        build_sampler(cfg.loss.sampler, split.item_counts)
        if cfg.loss.kind in ("sampled_softmax", "sampled_softmax_ihn")
        else None
    )
    loss_module = _LossModule(model, cfg, sampler, device)
    module: nn.Module = loss_module
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=ids, find_unused_parameters=True
        )
    stepper = _make_stepper(model, cfg, split, model.causal)
    ckpt = out / CHECKPOINT
    st = _State(history=[])
    if resume and ckpt.exists():
        st = _load_checkpoint(ckpt, loss_module, stepper, device, rank)
        if cfg.optim.schedule_horizon == "budget" and st.epoch:
            _refit_horizon(cfg, stepper.horizon, st)  # to this run's budget
    log.info(
        "training %s on %d items, %d training users (%s protocol %s, logits in %s)",
        cfg.model.name,
        prep.vocab.size,
        len(split.train.sequences),
        cfg.loss.kind,
        cfg.data.protocol,
        str(resolve_matmul_dtype(cfg.loss.matmul_dtype)).removeprefix("torch."),
    )
    while st.epoch < cfg.optim.max_epochs:
        started = time.perf_counter()
        before_epoch(model, cfg, split, st.epoch)  # ELCRec: k-means start of the intent centres
        loss, seen = _run_epoch(
            module, stepper, cfg, split, model.causal, st.epoch, rank, world, progress, device
        )
        st.elapsed += time.perf_counter() - started
        st.examples += seen
        rng = _gather(rng_state(loss_module.generator, device), world)
        stop = _end_of_epoch(cfg, model, stepper, split, st, loss, out, rank, started, rng, device)
        if world > 1:
            flag, stepper.horizon.epochs = _broadcast_ints(
                device, int(stop), stepper.horizon.epochs
            )
            stop = bool(flag)
        if stop:
            break
    return _finish(cfg, prep, model, st, out, rank, device)


def _gather(state: dict[str, Any], world: int) -> list[dict[str, Any]]:
    """Every rank's ``state``, in rank order (on every rank)."""
    if world == 1:
        return [state]
    import torch.distributed as dist

    states: list[Any] = [None] * world
    dist.all_gather_object(states, state)
    return states


def _fit_floor(cfg: TrainConfig, prep: Prepared, out: Path, rank: int) -> TrainResult:
    """Fit a non-neural floor on the training sequences and bundle it like a trained model."""
    split = prep.split
    started = time.perf_counter()
    model = fit_floor(cfg.model, split.train.sequences, prep.vocab.size)
    st = _State(history=[], elapsed=time.perf_counter() - started)
    log.info("fitted the %s floor in %.2f s", cfg.model.name, st.elapsed)
    cpu = torch.device("cpu")
    return _finish(cfg, prep, model, st, out, rank, cpu, _validate(model, split, cfg.eval, cpu))


def _end_of_epoch(
    cfg: TrainConfig,
    model: TwoTower,
    stepper: _Stepper,
    split: Split,
    st: _State,
    loss: float,
    out: Path,
    rank: int,
    started: float,
    rng: list[dict[str, Any]],
    device: torch.device,
) -> bool:
    """Validate, log, keep the best state, checkpoint; returns True when training should stop.

    ``started`` is the ``perf_counter`` at the epoch's start: the epoch's wall time (training
    and validation) counts against ``max_minutes`` and, when ``schedule_horizon`` is
    ``budget``, refits the schedule's horizon.
    """
    if rank != 0:
        st.epoch += 1
        return False
    with stepper.evaluation_weights():
        valid = _validate(model, split, cfg.eval, device)
        value = valid[cfg.eval.metric]
        if value > st.best_value:
            st.best_state = copy.deepcopy(model.state_dict())
    row = {
        "epoch": st.epoch,
        "train_loss": loss,
        "lr": float(stepper.sched.get_last_lr()[0]),
        "seconds": st.elapsed,
        **epoch_diagnostics(model, cfg, split),
        **{f"valid/{k}": v for k, v in valid.items()},
    }
    assert st.history is not None
    st.history.append(row)
    if value > st.best_value:
        st.best_value, st.best_epoch, st.bad_epochs = value, st.epoch, 0
    else:
        st.bad_epochs += 1
    log.info(
        "epoch %d loss %.4f valid %s %.4f (best %.4f @ %d)",
        st.epoch,
        loss,
        cfg.eval.metric,
        value,
        st.best_value,
        st.best_epoch,
    )
    with (out / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    st.epoch += 1
    st.last_epoch_wall = time.perf_counter() - started
    st.wall += st.last_epoch_wall
    if st.epoch == 1:
        st.first_epoch_wall = st.last_epoch_wall
    if cfg.optim.schedule_horizon == "budget":
        _refit_horizon(cfg, stepper.horizon, st)
    _save_checkpoint(out / CHECKPOINT, model, stepper, st, rng)
    return _should_stop(cfg, stepper, st)


def _refit_horizon(cfg: TrainConfig, horizon: ScheduleHorizon, st: _State) -> None:
    before = horizon.epochs
    pace = _pace(st)
    after = horizon.fit_to_budget(cfg.optim, st.epoch, st.wall, pace)
    if after != before:
        log.info("schedule fitted to the budget: %d epochs (%.1f s per epoch)", after, pace)


def _pace(st: _State) -> float:
    """Seconds per epoch: the mean over epochs after the first (start-up), else the first."""
    steady = st.epoch - 1
    return (st.wall - st.first_epoch_wall) / steady if steady > 0 else st.wall


def _should_stop(cfg: TrainConfig, stepper: _Stepper, st: _State) -> bool:
    """Patience spent, the budget-fitted schedule ended, or the next epoch would overrun."""
    if st.bad_epochs >= cfg.optim.patience:
        log.info(
            "early stop: valid %s has not improved for %d epochs; keeping epoch %d (%.4f)",
            cfg.eval.metric,
            st.bad_epochs,
            st.best_epoch,
            st.best_value,
        )
        return True
    if cfg.optim.schedule_horizon == "budget" and st.epoch >= stepper.horizon.epochs:
        log.info("stopping: the schedule fitted to the budget ended at epoch %d", st.epoch - 1)
        return True
    budget = cfg.optim.max_minutes
    if budget is not None and st.wall + max(_pace(st), st.last_epoch_wall) > 60 * budget:
        log.info("stopping: the next epoch would overrun the %.1f-minute budget", budget)
        return True
    return False


def _broadcast_ints(device: torch.device, *values: int) -> tuple[int, ...]:
    """Rank 0's values, on every rank (the tensor lives on ``device``, as nccl needs)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    return tuple(int(v) for v in t.tolist())


def _finish(
    cfg: TrainConfig,
    prep: Prepared,
    model: TwoTower,
    st: _State,
    out: Path,
    rank: int,
    device: torch.device,
    valid: dict[str, float] | None = None,
) -> TrainResult:
    """Test the kept weights, then write the bundle (from the CPU), curve and ``result.json``.

    ``valid`` is the validation of a model without epochs (a floor); otherwise the best
    epoch's history row holds it. A zero-shot tower is then refitted and its blend chosen on
    the validation users (``choose_zero_shot``): the bundle saves the kept state and the
    config with the chosen blend, the metrics and ``result.json`` record the choice.
    """
    if st.best_state is not None:
        model.load_state_dict(st.best_state)
    start_centres(model, cfg, prep.split, "on the kept weights (best epoch before the start)")
    model.eval()
    metrics: dict[str, float] = {}
    choice = None
    if rank == 0:
        if valid is None:
            best = next((h for h in st.history or [] if h["epoch"] == st.best_epoch), {})
            metrics = {k: float(v) for k, v in best.items() if k.startswith("valid/")}
        else:
            metrics = {f"valid/{k}": float(v) for k, v in valid.items()}
        split = prep.split
        scorer = _scorer(model, device)
        test = evaluate_scorer(scorer, split.test, cfg.eval, split.max_len)
        ref_cfg = cfg.eval.model_copy(update={"history_score": "zero"})
        ref = evaluate_scorer(scorer, split.test, ref_cfg, split.max_len)
        model.cpu()
        metrics.update({f"test/{k}": v for k, v in test.items()})
        metrics.update({f"test_ref/{k}": v for k, v in ref.items()})
        choice = choose_zero_shot(model, cfg, prep)  # None without a zero-shot tower
        if choice is not None:
            cfg = choice.cfg
            metrics.update(choice.metrics())
    result = TrainResult(
        bundle_dir=out / "bundle",
        metrics=metrics,
        history=list(st.history or []),
        best_epoch=st.best_epoch,
        train_seconds=st.elapsed,
        examples_per_second=st.examples / st.elapsed if st.elapsed else 0.0,
        peak_rss_mb=peak_rss_mb(),
        zero_shot=None if choice is None else choice.summary(),
    )
    if rank == 0:
        extra: dict[str, Any] = {"best_epoch": st.best_epoch}
        if result.zero_shot is not None:
            extra["zero_shot"] = result.zero_shot
        bundle = ModelBundle(
            model,
            cfg,
            prep.vocab,
            prep.item_attributes,
            metrics,
            prep.data_fingerprint,
            extra=extra,
        )
        bundle.save(result.bundle_dir)
        plot_training_curve(result.history, cfg.eval.metric, out / "training_curve.png")
        write_result(result, out / "result.json")
    return result


def plot_training_curve(history: list[dict[str, float]], metric: str, path: Path) -> None:
    """Training loss and validation metric per epoch as a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [h[f"valid/{metric}"] for h in history], color="tab:orange", marker="o")
    ax2.set_ylabel(f"valid {metric}", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _attrs(attrs: np.ndarray | None) -> torch.Tensor | None:
    return None if attrs is None else torch.from_numpy(attrs)
