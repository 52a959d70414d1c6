"""After training: refit MAIL's zero-shot tower on the frozen ranking tower, choose the blend.

Co-training (``mirec.objectives.mail.ZeroShotTrainer``) gives the zero-shot tower one step per
ranking batch, against a ranking space that keeps moving. ``refit_and_choose`` runs once the
ranking tower is trained: from the co-trained state, for each share of hidden profile tokens in
``zero_shot.refit_token_drops``, ``zero_shot.refit_chunks`` chunks of
``zero_shot.refit_chunk_epochs`` epochs of ``fit_zero_shot`` (Adam, ``zero_shot.refit_lr``),
round-robin over the shares (chunk 1 of every share, then chunk 2, ...). After every chunk the
zero-shot tower is scored on the validation cold users at 0 events (their profile alone) by
``eval.metric``; the best state, or the co-trained one, is kept. ``zero_shot.refit_max_minutes``
caps the refit's wall clock: no chunk starts that would end past it (by the slowest chunk so
far), and every share has then had about the same number of epochs. Then the
blend weight is chosen among ``zero_shot.blends`` by the mean of the same metric at
``zero_shot.blend_history`` events. Only the zero-shot tower changes; the chosen blend is
returned in a copy of the config, which is what the bundle saves and serving reads.

``choose_zero_shot`` is the training loop's call: the run's own held-out validation users
(protocol A: users not trained on) cut at each history length (``held_out_at_lengths``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mirec.config import TrainConfig
from mirec.data.cold_splits import held_out_at_lengths
from mirec.data.splits import EvalData, TrainData
from mirec.evaluate import evaluate_scorer
from mirec.models.cold_start import ZERO_SHOT, ZeroShotScorer, zero_shot_tower
from mirec.models.mail import ZeroShotTower
from mirec.models.two_tower import TwoTower
from mirec.objectives.mail import RefitTargets, fit_zero_shot
from mirec.training.prepare import Prepared

log = logging.getLogger(__name__)

CO_TRAINED = "co-trained"  # the refit's key for the state co-training left (0 refit epochs)


@dataclass(frozen=True)
class ZeroShotChoice:
    """What ``refit_and_choose`` kept.

    Attributes:
        cfg: the run's config with ``model.zero_shot.blend`` set to the chosen weight.
        metric: the validation metric both choices maximise (``eval.metric``).
        valid_users: validation cold users scored.
        refit: the kept state, ``CO_TRAINED`` or ``"drop <share>, <epochs> epochs"``.
        refit_curve: every state's validation metric at 0 events, by key.
        token_drop, refit_epochs: the kept state's share of hidden tokens and epochs (0, 0 for
            the co-trained state).
        blend: the chosen weight.
        blend_curve: every candidate weight's mean validation metric at ``blend_history``.
        seconds: wall time of the refit and the choice.
        refit_complete: False when ``zero_shot.refit_max_minutes`` cut the grid short.
    """

    cfg: TrainConfig
    metric: str
    valid_users: int
    refit: str
    refit_curve: dict[str, float]
    token_drop: float
    refit_epochs: int
    blend: float
    blend_curve: dict[str, float]
    seconds: float
    refit_complete: bool = True

    def summary(self) -> dict[str, Any]:
        """The choice as JSON-ready values (``result.json``, the bundle's ``extra``)."""
        return {
            "metric": self.metric,
            "valid_users": self.valid_users,
            "refit": {
                "chosen": self.refit,
                "token_drop": self.token_drop,
                "epochs": self.refit_epochs,
                "complete": self.refit_complete,
                f"valid_h0_{self.metric}": self.refit_curve,
            },
            "blend": self.blend,
            f"blend_valid_{self.metric}": self.blend_curve,
            "seconds": round(self.seconds, 1),
        }

    def metrics(self) -> dict[str, float]:
        """Flat ``zero_shot/...`` numbers for the run's metrics."""
        m = self.metric
        out = {
            "zero_shot/blend": self.blend,
            "zero_shot/refit_epochs": float(self.refit_epochs),
            "zero_shot/refit_token_drop": self.token_drop,
            f"zero_shot/valid_h0/{m}": self.refit_curve[self.refit],
            f"zero_shot/valid_h0_co_trained/{m}": self.refit_curve[CO_TRAINED],
        }
        if self.blend_curve:  # a blend was chosen (zero_shot.blends not empty)
            out[f"zero_shot/valid_blend/{m}"] = self.blend_curve[str(self.blend)]
        return out


def refit_key(token_drop: float, epochs: int) -> str:
    """The refit curve's key of a state: ``"drop 0.5, 20 epochs"``."""
    return f"drop {token_drop}, {epochs} epochs"


def with_blend(cfg: TrainConfig, weight: float) -> TrainConfig:
    """A copy of ``cfg`` with ``model.zero_shot.blend = weight``."""
    zs = cfg.model.zero_shot.model_copy(update={"blend": float(weight)})
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"zero_shot": zs})})


def _score(model: TwoTower, cfg: TrainConfig, data: EvalData, profiles: torch.Tensor) -> float:
    """``eval.metric`` of the zero-shot scorer (blend of ``cfg``) on ``data``.

    Args:
        model: the trained model with its zero-shot tower.
        cfg: the config whose ``model.zero_shot`` (blend, max_history) serves.
        data: validation cold users at one history length.
        profiles: LongTensor [U, P] hashed profiles, rows aligned with ``data``.
    """
    scorer = ZeroShotScorer(model, cfg.model, profiles)
    return float(evaluate_scorer(scorer, data, cfg.eval, cfg.data.max_len)[cfg.eval.metric])


def _refit(
    model: TwoTower,
    cfg: TrainConfig,
    train: TrainData,
    train_profiles: torch.Tensor,
    data: EvalData,
    profiles: torch.Tensor,
) -> tuple[str, tuple[float, int], dict[str, float], bool]:
    """Refit the zero-shot tower over the grid; leave the best state at 0 events in it.

    Args:
        model: the trained model; only its zero-shot tower changes.
        cfg: the run's config (``model.zero_shot.refit_*``, ``seed``).
        train: the training users' sequences.
        train_profiles: LongTensor [U_train, P] their hashed profiles.
        data: validation cold users at 0 events; profiles: LongTensor [U, P] theirs.

    Returns:
        (the kept state's key, its (token share, epochs), every state's validation metric by
        key, whether the whole grid ran); the co-trained state is ``(CO_TRAINED, (0.0, 0),
        ...)``.
    """
    zs = cfg.model.zero_shot
    tower = zero_shot_tower(model)
    seqs = [torch.from_numpy(s) for s in train.sequences]
    targets = RefitTargets.of(model, seqs, cfg.data.max_len)  # the frozen tower, read once
    co_trained = copy.deepcopy(tower.state_dict())
    curve = {CO_TRAINED: _score(model, cfg, data, profiles)}
    best_key, best_state, best_at = CO_TRAINED, co_trained, (0.0, 0)
    states = dict.fromkeys(zs.refit_token_drops, co_trained)
    clock, complete, epochs = _RefitClock(zs.refit_max_minutes), True, zs.refit_chunk_epochs
    for chunk, drop in _grid(zs.refit_token_drops, zs.refit_chunks):
        if not clock.room():
            complete = False
            log.info(
                "zero-shot refit: the %.1f-minute cap ends the grid before drop %s chunk %d",
                zs.refit_max_minutes, drop, chunk,
            )  # fmt: skip
            break
        tower.load_state_dict(states[drop])
        fit_zero_shot(
            tower, targets, train_profiles, epochs, zs.refit_lr, cfg.seed + chunk,
            token_drop=drop,
        )  # fmt: skip
        states[drop] = copy.deepcopy(tower.state_dict())
        key = refit_key(drop, chunk * epochs)
        curve[key] = _score(model, cfg, data, profiles)
        clock.lap()
        log.info("zero-shot refit %s: valid h=0 %s %.4f", key, cfg.eval.metric, curve[key])
        if curve[key] > curve[best_key]:
            best_key, best_state, best_at = key, states[drop], (float(drop), chunk * epochs)
    tower.load_state_dict(best_state)
    return best_key, best_at, curve, complete


def _grid(drops: tuple[float, ...], chunks: int) -> list[tuple[int, float]]:
    """(chunk, token share) in refit order: chunk 1 of every share, then chunk 2, ..."""
    return [(chunk, drop) for chunk in range(1, chunks + 1) for drop in drops]


class _RefitClock:
    """The refit's wall clock against ``zero_shot.refit_max_minutes`` (None: no cap)."""

    def __init__(self, max_minutes: float | None) -> None:
        self.last = time.perf_counter()
        self.deadline = None if max_minutes is None else self.last + 60 * max_minutes
        self.slowest = 0.0

    def lap(self) -> None:
        """One chunk (fit and score) ended."""
        now = time.perf_counter()
        self.slowest, self.last = max(self.slowest, now - self.last), now

    def room(self) -> bool:
        """Whether another chunk, as slow as the slowest so far, ends before the cap."""
        return self.deadline is None or time.perf_counter() + self.slowest <= self.deadline


def _choose_blend(
    model: TwoTower, cfg: TrainConfig, valid: Mapping[int, EvalData], profiles: torch.Tensor
) -> tuple[float, dict[str, float]]:
    """The blend weight with the best mean ``eval.metric`` at ``zero_shot.blend_history``.

    Returns:
        (the weight, each candidate's mean by ``str(weight)``); ``(zero_shot.blend, {})`` when
        ``zero_shot.blends`` is empty. Ties keep the first candidate.
    """
    zs = cfg.model.zero_shot
    curve: dict[str, float] = {}
    for weight in zs.blends:
        blended = with_blend(cfg, weight)
        scores = [_score(model, blended, valid[h], profiles) for h in zs.blend_history]
        curve[str(weight)] = float(np.mean(scores))
    if not curve:
        return zs.blend, curve
    best = max(zs.blends, key=lambda w: curve[str(w)])
    return float(best), curve


def refit_and_choose(
    model: TwoTower,
    cfg: TrainConfig,
    train: TrainData,
    train_profiles: np.ndarray,
    valid: Mapping[int, EvalData],
    valid_profiles: np.ndarray,
) -> ZeroShotChoice:
    """Refit the zero-shot tower on the frozen ranking tower, then choose the blend weight.

    Args:
        model: the trained model (on the CPU); its zero-shot tower is left in the kept state.
        cfg: the run's config (``model.zero_shot``, ``eval``, ``data.max_len``, ``seed``).
        train: the training users' sequences (the refit's rows).
        train_profiles: int64 [U_train, P] their hashed profiles, rows aligned with ``train``.
        valid: history length h -> validation cold users (first h events as history, the rest
            as targets), the same users in the same order at every h; needs h = 0 and every h
            of ``zero_shot.blend_history`` when ``zero_shot.blends`` is not empty.
        valid_profiles: int64 [U, P] their hashed profiles, rows aligned with ``valid[h]``.

    Returns:
        The choice, with the config that carries the chosen blend.
    """
    started = time.perf_counter()
    profiles = torch.from_numpy(np.asarray(valid_profiles, dtype=np.int64))
    rows = torch.from_numpy(np.asarray(train_profiles, dtype=np.int64))
    key, (drop, epochs), curve, complete = _refit(model, cfg, train, rows, valid[0], profiles)
    blend, blend_curve = _choose_blend(model, cfg, valid, profiles)
    choice = ZeroShotChoice(
        with_blend(cfg, blend), cfg.eval.metric, len(valid[0]), key, curve, drop, epochs,
        blend, blend_curve, time.perf_counter() - started, complete,
    )  # fmt: skip
    log.info(
        "zero-shot tower: kept %s (valid h=0 %s %.4f, co-trained %.4f), blend %.2f; %.0f s",
        key,
        cfg.eval.metric,
        curve[key],
        curve[CO_TRAINED],
        blend,
        choice.seconds,
    )
    return choice


def _held_out_validation(
    cfg: TrainConfig, prep: Prepared
) -> tuple[dict[int, EvalData], np.ndarray] | str:
    """The run's validation cold users at each history length and their profiles [U, P].

    Returns:
        (h -> rows, int64 [U, P] profiles aligned with the rows), or why the run has none.
    """
    split, zs = prep.split, cfg.model.zero_shot
    if split.protocol != "A":
        return f"protocol {split.protocol} has no held-out validation users (needs protocol A)"
    if prep.user_profiles is None or prep.valid_profiles is None:
        return "the run has no profiles of its training and validation users"
    lengths = sorted({0, *(zs.blend_history if zs.blends else ())})
    valid = held_out_at_lengths(split.valid, lengths)
    if not len(valid[0]):
        return f"no validation user has more than {max(lengths)} events"
    index = {user: row for row, user in enumerate(split.valid.user_ids)}
    pick = [index[user] for user in valid[0].user_ids]
    return valid, prep.valid_profiles[pick]


def choose_zero_shot(model: TwoTower, cfg: TrainConfig, prep: Prepared) -> ZeroShotChoice | None:
    """``refit_and_choose`` on the run's held-out validation users, when the run has them.

    The validation users of protocol A were not trained on: at h = 0 their profile alone is
    scored, at h in ``zero_shot.blend_history`` their first h events (``held_out_at_lengths``).

    Args:
        model: the trained model (on the CPU).
        cfg: the run's config.
        prep: the run's inputs (``user_profiles``, ``valid_profiles``, the split).

    Returns:
        The choice; None when the model has no zero-shot tower, or (logged) when the run has
        no held-out validation users with profiles: the co-trained state and the configured
        blend are then kept.
    """
    if not isinstance(getattr(model, ZERO_SHOT, None), ZeroShotTower):
        return None
    found = _held_out_validation(cfg, prep)
    if isinstance(found, str):
        log.warning(
            "zero-shot tower: no refit, blend %.2f kept: %s", cfg.model.zero_shot.blend, found
        )
        return None
    valid, profiles = found
    assert prep.user_profiles is not None
    return refit_and_choose(model, cfg, prep.split.train, prep.user_profiles, valid, profiles)
