"""DistributedDataParallel training under torchrun (2 processes, gloo) matches one process."""

from __future__ import annotations

import pytest
import torch

from mirec.bundle import ModelBundle
from mirec.config import load
from mirec.data.synthetic import generate
from mirec.training import train

OVERRIDES = [
    "model.name=comirec_sa",
    "model.dim=16",
    "model.dropout=0.0",
    "loss.kind=full_softmax",
    "loss.readout=target_aware",
    "optim.lr=0.005",
    "optim.batch_size=128",
    "optim.max_epochs=3",
    "optim.patience=5",
    "optim.num_threads=1",
    "eval.metric=recall@20",
]


@pytest.mark.integration
@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = generate(num_users=500, num_items=200, num_clusters=6, mean_len=15, seed=5)
    cfg = load(None, OVERRIDES)
    single = train(cfg, data, tmp_path / "single", progress=False)
    ddp = train(cfg, data, tmp_path / "ddp", num_workers=2, progress=False)
    assert len(ddp.history) == len(single.history) == 3
    gap = abs(ddp.metrics["valid/recall@20"] - single.metrics["valid/recall@20"])
    assert gap <= 0.02, (ddp.metrics["valid/recall@20"], single.metrics["valid/recall@20"])
    assert ddp.metrics["valid/recall@20"] > 0.1  # it learned something
    assert ModelBundle.load(ddp.bundle_dir).num_items == 200  # rank 0 wrote a loadable bundle
    assert not (tmp_path / "ddp" / "checkpoint.tmp").exists()
    ckpt = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)
    assert len(ckpt["rng"]) == 2  # each rank's random states, for an exact resume
