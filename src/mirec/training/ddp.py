"""Distributed training: ``torchrun`` launcher and per-rank entry point (DDP).

Each rank trains on the device ``optim.device`` resolves to (``mirec.training.device``): the CPU
by default, ``cuda:{LOCAL_RANK}`` when GPUs are configured; the process group uses nccl only
when that device is a CUDA device, gloo otherwise.

``launch`` pickles the prepared inputs into the run directory and starts
``torchrun --standalone --nproc_per_node=N -m mirec.training.ddp RUN_DIR``; every rank loads the
same inputs, joins the process group and runs ``mirec.training.train_worker``. Rank 0 writes
the bundle and ``result.json``, which ``launch`` reads back.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import torch

from mirec.config import TrainConfig
from mirec.errors import MirecError
from mirec.models.baselines import FLOOR_MODELS
from mirec.training.device import process_group_backend, resolve_device
from mirec.training.prepare import Prepared
from mirec.training.result import TrainResult, read_result

log = logging.getLogger(__name__)
INPUTS = "ddp_inputs.pkl"


def launch(cfg: TrainConfig, prep: Prepared, out: Path, *, resume: bool, nproc: int) -> TrainResult:
    """Run ``train_worker`` on the prepared inputs in ``nproc`` processes; rank 0's result.

    A floor (``model.name`` popularity / itemknn) has nothing to distribute: one process fits it.
    """
    out.mkdir(parents=True, exist_ok=True)
    if cfg.model.name in FLOOR_MODELS:
        from mirec.training.loop import train_worker

        log.info("the %s floor is fitted in one process, not %d", cfg.model.name, nproc)
        return train_worker(cfg, prep, out, resume=resume, progress=False)
    with (out / INPUTS).open("wb") as fh:
        pickle.dump({"cfg": cfg, "prep": prep, "resume": resume}, fh)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "mirec.training.ddp",
        str(out),
    ]
    log.info("launching %d training processes: %s", nproc, " ".join(cmd))
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise MirecError(f"distributed training failed with exit code {proc.returncode}")
    return read_result(out / "result.json")


def main(argv: list[str] | None = None) -> int:
    """Per-rank entry point (run by torchrun)."""
    import torch.distributed as dist

    from mirec.training.loop import train_worker

    out = Path((argv or sys.argv[1:])[0])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with (out / INPUTS).open("rb") as fh:
        inputs = pickle.load(fh)
    device = rank_device(inputs["cfg"])
    dist.init_process_group(process_group_backend(device))
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    log.info("rank %d of %d on %s (%s)", rank, world, device, dist.get_backend())
    try:
        train_worker(
            inputs["cfg"],
            inputs["prep"],
            out,
            resume=inputs["resume"],
            progress=False,
            rank=rank,
            world=world,
            device=device,
        )
    finally:
        dist.destroy_process_group()
    return 0


def rank_device(cfg: TrainConfig) -> torch.device:
    """This rank's device from ``optim.device`` and torchrun's LOCAL_RANK / LOCAL_WORLD_SIZE."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    device = resolve_device(cfg.optim.device, local_rank, local_world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


if __name__ == "__main__":
    raise SystemExit(main())
