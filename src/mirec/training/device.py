"""Where training runs: each process's device and the process group's backend.

``optim.device`` is ``cpu`` (the default and the tested path), ``cuda`` or ``auto``. ``cuda``
places rank r's model and batches on ``cuda:{local_rank}`` and needs one visible GPU per process
of the node; ``auto`` does the same when there are enough GPUs and stays on the CPU otherwise.
DistributedDataParallel uses nccl only when the devices are CUDA devices, gloo otherwise.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

from mirec.data.batches import SeqBatch
from mirec.errors import ConfigError
from mirec.models.two_tower import TwoTower

log = logging.getLogger(__name__)
DEVICE_SETTINGS = ("cpu", "cuda", "auto")


def resolve_device(
    setting: str, local_rank: int = 0, local_world: int = 1, visible: int | None = None
) -> torch.device:
    """The device of the process with ``local_rank`` among ``local_world`` on this node.

    Args:
        setting: ``optim.device``: "cpu", "cuda" or "auto".
        local_rank: the process's rank on its node (torchrun's ``LOCAL_RANK``).
        local_world: processes on the node (torchrun's ``LOCAL_WORLD_SIZE``).
        visible: CUDA devices visible to the process (None: ask torch).

    Raises:
        ConfigError: an unknown setting, or ``cuda`` without one GPU per process.
    """
    if setting not in DEVICE_SETTINGS:
        raise ConfigError(f"optim.device must be one of {list(DEVICE_SETTINGS)}, got {setting!r}")
    if setting == "cpu":
        return torch.device("cpu")
    gpus = torch.cuda.device_count() if visible is None else visible
    enough = gpus >= max(local_world, local_rank + 1)
    if setting == "auto" and not enough:
        if gpus:
            log.info(
                "optim.device=auto: %d GPU(s) for %d processes, training on the CPU",
                gpus,
                local_world,
            )
        return torch.device("cpu")
    if not enough:
        raise ConfigError(
            f"optim.device=cuda needs one GPU per training process: {local_world} process(es), "
            f"{gpus} CUDA device(s) visible (use optim.device=cpu or auto)"
        )
    return torch.device("cuda", local_rank)


def process_group_backend(device: torch.device) -> str:
    """nccl for CUDA devices, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def new_generator(seed: int, device: torch.device) -> torch.Generator:
    """A seeded torch generator on ``device`` (negative sampling draws there)."""
    return torch.Generator(device=device).manual_seed(seed)


def move_batch(batch: SeqBatch, device: torch.device) -> SeqBatch:
    """``batch`` with every tensor on ``device`` (the same object when it is already there)."""
    if batch.hist_item_ids.device == device:
        return batch
    return SeqBatch(
        batch.hist_item_ids.to(device),
        batch.hist_len.to(device),
        batch.target_item_ids.to(device),
        None if batch.pos_targets is None else batch.pos_targets.to(device),
        None if batch.user_idx is None else batch.user_idx.to(device),
    )


class DeviceScorer:
    """A model on ``device`` seen as a CPU scorer: batches go in, scores [B, N+1] come back.

    Evaluation builds its batches on the CPU; this moves each one to the model's device and the
    scores back, so ``mirec.evaluate`` ranks a GPU model unchanged.
    """

    def __init__(self, model: TwoTower, device: torch.device) -> None:
        self.model, self.device = model, device

    def eval(self) -> None:
        """Switch the model to evaluation mode."""
        self.model.eval()

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """Scores of every item for every row, on the CPU."""
        scores: torch.Tensor = self.model.score_all(move_batch(batch, self.device))
        return scores.cpu()


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, object]:
    """Every random state training draws from: Python, numpy, torch (CPU and ``device``) and the
    loss's ``generator`` (negative sampling), for an exact resume."""
    state: dict[str, object] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(
    state: dict[str, object], generator: torch.Generator, device: torch.device
) -> None:
    """Restore the states saved by ``rng_state``."""
    random.setstate(state["python"])  # type: ignore[arg-type]
    np.random.set_state(state["numpy"])  # type: ignore[arg-type]
    torch.set_rng_state(state["torch"])  # type: ignore[arg-type]
    generator.set_state(state["generator"])  # type: ignore[arg-type]
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)  # type: ignore[arg-type]
