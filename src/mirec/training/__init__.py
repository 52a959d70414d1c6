"""Training: the loop, DDP launch, optimiser and schedule.

``train(cfg, dataset, out_dir)`` is the one entry point: one process runs ``loop.train_worker``,
``num_workers > 1`` runs it under torchrun (``ddp.launch``). A MAIL zero-shot tower is refitted
and its blend chosen on the validation users after training (``refit_and_choose``).
"""

from __future__ import annotations

from pathlib import Path

from mirec.config import TrainConfig
from mirec.data.events import Dataset
from mirec.data.vocab import Vocabulary
from mirec.training.ddp import launch
from mirec.training.loop import plot_training_curve, train_worker
from mirec.training.prepare import (
    Prepared,
    data_fingerprint,
    num_examples,
    prepare,
    prepare_from_training_set,
)
from mirec.training.result import TrainResult, peak_rss_mb, read_result, write_result
from mirec.training.zero_shot import ZeroShotChoice, choose_zero_shot, refit_and_choose

__all__ = [
    "Prepared",
    "TrainResult",
    "ZeroShotChoice",
    "choose_zero_shot",
    "data_fingerprint",
    "num_examples",
    "peak_rss_mb",
    "plot_training_curve",
    "prepare",
    "prepare_from_training_set",
    "read_result",
    "refit_and_choose",
    "train",
    "train_worker",
    "write_result",
]


def train(
    cfg: TrainConfig,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    vocab: Vocabulary | None = None,
    resume: bool = False,
    num_workers: int = 1,
    progress: bool = True,
    prepared: Prepared | None = None,
) -> TrainResult:
    """Train one model and write its bundle under ``out_dir/bundle``.

    Args:
        cfg: resolved config.
        dataset: canonical events, item catalog and user profiles.
        out_dir: run directory (checkpoint, metrics log, curve, bundle).
        vocab: the previous model's vocabulary to extend (append-only), or None.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        num_workers: > 1 runs DistributedDataParallel under torchrun with that many processes.
        progress: show progress bars.
        prepared: the inputs when already prepared (``prepare_from_training_set``); default
            ``prepare(cfg, dataset, vocab)``.
    """
    prep = prepared or prepare(cfg, dataset, vocab)
    if num_workers > 1:
        return launch(cfg, prep, Path(out_dir), resume=resume, nproc=num_workers)
    return train_worker(cfg, prep, Path(out_dir), resume=resume, progress=progress)
