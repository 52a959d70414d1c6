"""Floors train into normal bundles and evaluate through the bundle path as the benchmark does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mirec.bundle import MANIFEST, ModelBundle
from mirec.cli import main
from mirec.config import load
from mirec.data.loaders import load_dataset
from mirec.data.synthetic import generate
from mirec.evaluate import evaluate_bundle, evaluate_scorer
from mirec.index import build_index, search_interests
from mirec.models.baselines import ItemKNN, Popularity
from mirec.models.two_tower import TwoTower
from mirec.training import prepare, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return generate(num_users=400, num_items=150, num_clusters=6, mean_len=15, seed=11)


def _direct(name: str, split) -> TwoTower:
    """The floor as ``benchmarks/bench_quality.py`` builds it."""
    if name == "popularity":
        return Popularity(split.item_counts)
    return ItemKNN.fit(split.train.sequences, split.num_items)


@pytest.mark.parametrize("name", ["popularity", "itemknn"])
def test_floor_bundle_evaluates_like_the_direct_floor(data, tmp_path, name: str) -> None:
    cfg = load(None, [f"model.name={name}", "optim.num_threads=1"])
    result = train(cfg, data, tmp_path, progress=False, num_workers=2)  # a floor fits in one
    bundle = ModelBundle.load(result.bundle_dir)
    split = prepare(cfg, data, bundle.vocab).split
    direct = _direct(name, split)
    for which, held_out in (("test", split.test), ("valid", split.valid)):
        via_bundle = evaluate_bundle(bundle, split, cfg.eval, which=which)
        assert via_bundle == evaluate_scorer(direct, held_out, cfg.eval, split.max_len)
        assert via_bundle["hr@20"] > 0
        for key, value in via_bundle.items():
            assert result.metrics[f"{which}/{key}"] == value
    manifest = json.loads((result.bundle_dir / MANIFEST).read_text())
    assert (manifest["dim"], manifest["num_interests"]) == (1, 1)
    assert result.best_epoch == -1 and result.history == []
    assert not (tmp_path / "checkpoint.pt").exists()


def test_popularity_bundle_is_served_by_its_index(data, tmp_path) -> None:
    """The index over the bundle's item vectors with its user vector ranks by count."""
    cfg = load(None, ["model.name=popularity"])
    bundle = ModelBundle.load(train(cfg, data, tmp_path, progress=False).bundle_dir)
    counts = prepare(cfg, data, bundle.vocab).split.item_counts
    items = bundle.item_vectors()
    np.testing.assert_array_equal(items[:, 0], counts.astype(np.float32))
    np.testing.assert_array_equal(ModelBundle.load_item_tower(bundle.path).item_vectors(), items)
    assert bundle.model.index_serves
    index, _ = build_index(items[1:], np.arange(1, len(items)), cfg.index)
    user = np.ones((1, 1, 1), dtype=np.float32)
    ids, scores = search_interests(index, user, 10)
    np.testing.assert_array_equal(scores[0], np.sort(counts[1:])[::-1][:10].astype(np.float32))
    assert counts[ids[0]].tolist() == sorted(counts[1:], reverse=True)[:10]


def test_itemknn_bundle_scores_users_exactly(data, tmp_path) -> None:
    cfg = load(None, ["model.name=itemknn"])
    bundle = ModelBundle.load(train(cfg, data, tmp_path, progress=False).bundle_dir)
    split = prepare(cfg, data, bundle.vocab).split
    direct = _direct("itemknn", split)
    assert not bundle.model.index_serves  # served by exact scoring, not by an index
    histories = list(split.test.histories[:20])
    scores = bundle.score_users(histories)
    assert scores.shape == (20, split.num_items + 1)
    for row, h in enumerate(histories):
        hist = torch.as_tensor(h[-cfg.data.max_len :], dtype=torch.long).unsqueeze(0)
        batch_scores = direct.score_all(_single(hist))
        np.testing.assert_array_equal(scores[row], batch_scores[0].numpy())
    users = ModelBundle.load_user_tower(bundle.path)  # neighbour tables: the user side's file
    assert not users.index_serves
    np.testing.assert_array_equal(users.score_users(histories), scores)


def _single(hist: torch.Tensor):
    from mirec.data.batches import SeqBatch

    return SeqBatch(hist, (hist != 0).sum(1), torch.zeros(1, dtype=torch.long))


def test_floor_bundle_rejects_attributes(data, tmp_path) -> None:
    from mirec.errors import ConfigError

    cfg = load(None, ["model.name=popularity", "model.use_attributes=true"])
    with pytest.raises(ConfigError, match="floor"):
        train(cfg, data, tmp_path, progress=False)


def test_cli_trains_and_evaluates_a_floor_bundle(tmp_path, capsys) -> None:
    """``mirec train model.name=itemknn`` then ``mirec evaluate --bundle``: the floor's numbers."""
    out = tmp_path / "run"
    assert (
        main(["train", "--data", "demo", "--out", str(out), "--no-progress", "model.name=itemknn"])
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", "--bundle", str(out / "bundle"), "--data", "demo"]) == 0
    rows = [line.strip("| ").split("|") for line in capsys.readouterr().out.splitlines()[2:]]
    printed = {key.strip(): float(value) for key, value in rows}
    cfg = load(None, ["model.name=itemknn"])
    split = prepare(cfg, load_dataset("demo")).split
    direct = evaluate_scorer(_direct("itemknn", split), split.test, cfg.eval, split.max_len)
    assert printed == pytest.approx({k: round(v, 4) for k, v in direct.items()}, abs=1e-9)
