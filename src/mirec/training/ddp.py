"""Distributed training: ``torchrun`` launcher and per-rank entry point (DDP, gloo on CPU).

``launch`` pickles the prepared inputs into the run directory and starts
``torchrun --standalone --nproc_per_node=N -m mirec.training.ddp RUN_DIR``; every rank loads the
same inputs, joins the process group and runs ``mirec.training.train_worker``. Rank 0 writes the bundle
and ``result.json``, which ``launch`` reads back.
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
from mirec.data.events import Dataset
from mirec.data.vocab import Vocabulary
from mirec.errors import MirecError
from mirec.training.prepare import prepare
from mirec.training.result import TrainResult, read_result

log = logging.getLogger(__name__)
INPUTS = "ddp_inputs.pkl"


def launch(
    cfg: TrainConfig,
    dataset: Dataset,
    out: Path,
    *,
    vocab: Vocabulary | None,
    resume: bool,
    nproc: int,
) -> TrainResult:
    """Run ``train_worker`` in ``nproc`` processes and return rank 0's TrainResult."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / INPUTS).open("wb") as fh:
        pickle.dump({"cfg": cfg, "prep": prepare(cfg, dataset, vocab), "resume": resume}, fh)
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
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    with (out / INPUTS).open("rb") as fh:
        inputs = pickle.load(fh)
    try:
        train_worker(
            inputs["cfg"],
            inputs["prep"],
            out,
            resume=inputs["resume"],
            progress=False,
            rank=rank,
            world=world,
        )
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
