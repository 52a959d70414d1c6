"""Full-ranking evaluation over all items, and the deploy gate.

Every item is scored; the user's history is excluded (score -inf, never a target); multi-interest
models score an item by the max over their K interest vectors, which equals per-interest top-N
merged by max score and deduplicated, as serving does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from mirec.config import EvalConfig, GateConfig, TrainConfig
from mirec.data.batches import SeqBatch, eval_batches
from mirec.data.splits import EvalData, Split
from mirec.metrics import compute_metrics, rank_topk

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """Anything that scores all items for a batch of histories: [B, T] -> [B, N+1]."""

    def score_all(self, batch: SeqBatch) -> torch.Tensor: ...


@torch.no_grad()
def rank_users(
    scorer: Scorer, data: EvalData, cfg: EvalConfig, max_len: int, k: int | None = None
) -> np.ndarray:
    """Top-k item indices for every user of ``data``, history excluded.

    Returns:
        int64 [U, min(k, N+1)] in the row order of ``data`` (a catalogue smaller than k gives
        every item; metrics at a larger K then count over all of them).
    """
    k = k or max(cfg.ks)
    out: np.ndarray | None = None
    if hasattr(scorer, "eval"):
        scorer.eval()
    for batch, rows in eval_batches(data, cfg.batch_size, max_len):
        scores = scorer.score_all(batch).float()
        exclude = [data.exclude[r] for r in rows]
        targets = [data.targets[r] for r in rows]
        top = rank_topk(scores, exclude, targets, k, cfg.history_score)
        if out is None:
            out = np.zeros((len(data.user_ids), top.shape[1]), dtype=np.int64)
        out[rows] = top
    return out if out is not None else np.zeros((0, k), dtype=np.int64)


def evaluate_scorer(
    scorer: Scorer,
    data: EvalData,
    cfg: EvalConfig,
    max_len: int,
    num_known_items: int | None = None,
) -> dict[str, float]:
    """HR / Recall / NDCG at every K in ``cfg.ks`` over the users of ``data``.

    Args:
        scorer: model or baseline.
        data: evaluation users with histories, targets and items to exclude.
        cfg: evaluation settings.
        max_len: history window given to the scorer.
        num_known_items: N of the scorer's vocabulary when it is older than the data's; history
            items beyond it are dropped and targets beyond it count as misses.
    """
    if num_known_items is not None:
        data, unknown_share = restrict_to_vocab(data, num_known_items)
    topk = rank_users(scorer, data, cfg, max_len)
    metrics = compute_metrics(topk, data.targets, cfg.ks, cfg.ndcg_variant)
    if num_known_items is not None:
        metrics["unknown_target_share"] = unknown_share
    metrics["num_users"] = float(len(data.user_ids))
    return metrics


def restrict_to_vocab(data: EvalData, num_items: int) -> tuple[EvalData, float]:
    """Drop history items an older model does not know; report the share of unknown targets.

    Targets stay as they are: an index above ``num_items`` can never be ranked, so it counts as a
    miss, which is the honest comparison between a challenger and an older production model.
    """
    total = sum(len(t) for t in data.targets)
    unknown = sum(int((t > num_items).sum()) for t in data.targets)
    histories = [h[h <= num_items] for h in data.histories]
    exclude = [e[e <= num_items] for e in data.exclude]
    restricted = EvalData(data.user_ids, histories, data.targets, exclude)
    share = unknown / total if total else 0.0
    if unknown:
        log.info(
            "%.2f%% of targets are unknown to the older vocabulary (counted as misses)", 100 * share
        )
    return restricted, share


class TrainedModel(Protocol):
    """What evaluation needs of a trained model (``mirec.bundle.ModelBundle`` is one)."""

    @property
    def model(self) -> Scorer: ...

    @property
    def num_items(self) -> int: ...

    @property
    def config(self) -> TrainConfig: ...


def evaluate_bundle(
    bundle: TrainedModel, split: Split, cfg: EvalConfig, which: str = "test"
) -> dict[str, float]:
    """Evaluate a trained model on a split's valid or test users, in the model's own terms.

    The split may come from another model's config (the gate scores production on the
    challenger's held-out users): each model reads the last ``data.max_len`` items of a history
    that its own config was trained with, and an older, smaller vocabulary drops the history
    items it does not know and counts unknown targets as misses (``restrict_to_vocab``).
    """
    data = split.test if which == "test" else split.valid
    known = bundle.num_items if bundle.num_items < split.num_items else None
    return evaluate_scorer(bundle.model, data, cfg, bundle.config.data.max_len, known)


@dataclass(frozen=True)
class GateResult:
    """The deploy gate's decision and why."""

    passed: bool
    metric: str
    challenger_value: float
    production_value: float | None
    reasons: list[str] = field(default_factory=list)

    @property
    def decision(self) -> str:
        """ "pass" or "fail", the string the pipeline branches on."""
        return "pass" if self.passed else "fail"


def gate(
    challenger: dict[str, float], production: dict[str, float] | None, cfg: GateConfig
) -> GateResult:
    """Pass when the challenger meets the absolute threshold and does not regress production.

    Both metric dicts must come from the same held-out data (the challenger's split).
    """
    if cfg.metric not in challenger:
        raise KeyError(f"gate metric {cfg.metric!r} not in challenger metrics {sorted(challenger)}")
    value = float(challenger[cfg.metric])
    reasons: list[str] = []
    if value < cfg.min_value:
        reasons.append(f"{cfg.metric} {value:.4f} < threshold {cfg.min_value:.4f}")
    prod_value = None if production is None else float(production[cfg.metric])
    if prod_value is not None and value < prod_value - cfg.max_regression:
        reasons.append(
            f"{cfg.metric} {value:.4f} regresses production {prod_value:.4f} "
            f"by more than {cfg.max_regression:.4f}"
        )
    result = GateResult(not reasons, cfg.metric, value, prod_value, reasons)
    log.info(
        "gate %s: %s=%.4f (production %s)%s",
        result.decision,
        cfg.metric,
        value,
        "none" if prod_value is None else f"{prod_value:.4f}",
        "" if result.passed else " — " + "; ".join(reasons),
    )
    return result


def metrics_table(rows: dict[str, dict[str, float]], keys: Sequence[str]) -> list[list[str]]:
    """Rows of formatted metric values, one per named result, for ``mirec.tables``."""
    return [
        [name] + [f"{vals.get(k, float('nan')):.4f}" for k in keys] for name, vals in rows.items()
    ]
