"""``mirec intents`` on a trained ELCRec-style model: every user gets one of the centres."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mirec.cli import main
from mirec.config import load
from mirec.data.synthetic import generate
from mirec.pipeline.io import write_dataset_dir
from mirec.training import train

SMALL = [
    "model.name=sasrec",
    "model.dim=16",
    "model.num_layers=1",
    "model.num_intents=3",
    "model.dropout=0.0",
    "loss.auxiliary.clustering=1",
    "loss.intents.warmup_epochs=0",
    "optim.max_epochs=1",
    "optim.batch_size=128",
    "optim.num_threads=1",
]


def test_intents_lists_groups_and_users(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = generate(num_users=120, num_items=60, num_clusters=3, mean_len=10, seed=2)
    root = write_dataset_dir(data.events, data.items, data.users, tmp_path / "data")
    result = train(load(None, SMALL), data, tmp_path / "run", progress=False)
    user = str(sorted(data.events["user_id"].unique())[0])
    out = tmp_path / "intents.csv"
    args = ["intents", "--bundle", str(result.bundle_dir), "--data", str(root), "--user", user]
    assert main([*args, "--user", "nobody", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "top 5 items in their histories" in printed and "unknown user" in printed
    table = pd.read_csv(out, dtype={"user_id": str})
    assert len(table) == data.events["user_id"].nunique()
    assert table["intent"].between(0, 2).all()
    assert f"| {user} " in printed


def test_a_model_without_centres_is_refused(tmp_path: Path) -> None:
    data = generate(num_users=60, num_items=40, num_clusters=3, mean_len=8, seed=3)
    root = write_dataset_dir(data.events, data.items, data.users, tmp_path / "data")
    plain = [o for o in SMALL if "intents" not in o and "clustering" not in o]
    result = train(load(None, plain), data, tmp_path / "run", progress=False)
    assert main(["intents", "--bundle", str(result.bundle_dir), "--data", str(root)]) != 0
