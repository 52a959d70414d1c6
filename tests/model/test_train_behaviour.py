"""Behavioural tests on small trained models: planted interests, bundle round trip, resume."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mirec.bundle import (
    ITEM_TOWER_FILE,
    ITEM_VECS_FILE,
    MANIFEST,
    MODEL_FILE,
    USER_TOWER_FILE,
    ModelBundle,
)
from mirec.config import load
from mirec.data.batches import SeqBatch, pad_left
from mirec.data.synthetic import generate
from mirec.data.vocab import Vocabulary
from mirec.errors import BundleMismatchError
from mirec.evaluate import evaluate_scorer
from mirec.manifest import file_sha256, read_manifest, write_manifest
from mirec.models import MODELS, build_model
from mirec.models.baselines import Popularity
from mirec.models.tower_state import item_tower_prefixes
from mirec.training import TrainResult, prepare, train

OVERRIDES = [
    "model.name=comirec_sa",
    "model.dim=32",
    "model.num_interests=4",
    "model.dropout=0.0",
    "loss.kind=full_softmax",
    "loss.readout=target_aware",
    "optim.lr=0.005",
    "optim.batch_size=256",
    "optim.max_epochs=4",
    "optim.patience=3",
    "optim.num_threads=1",
    "eval.metric=recall@20",
]


@pytest.fixture(scope="module")
def planted():
    return generate(
        num_users=800, num_items=300, num_clusters=8, interests_per_user=(2, 3), mean_len=20, seed=3
    )


@pytest.fixture(scope="module")
def trained(planted, tmp_path_factory) -> tuple[TrainResult, Path]:
    out = tmp_path_factory.mktemp("run")
    cfg = load(None, OVERRIDES)
    return train(cfg, planted, out, progress=False), out


def test_beats_popularity_by_far(planted, trained) -> None:
    result, _ = trained
    cfg = load(None, OVERRIDES)
    split = prepare(cfg, planted).split
    pop = evaluate_scorer(Popularity(split.item_counts), split.test, cfg.eval, split.max_len)
    assert result.metrics["test/recall@20"] > 2 * pop["recall@20"]
    assert result.metrics["test/recall@20"] > 0.15


def test_interests_point_at_different_planted_clusters(planted, trained) -> None:
    result, _ = trained
    bundle = ModelBundle.load(result.bundle_dir)
    item_cluster = planted.planted["item_cluster"]
    users = [u for u, cs in planted.planted["user_clusters"].items() if len(cs) >= 2][:200]
    seqs = planted.events.groupby("user_id")["item_id"].apply(list)
    hist = pad_left([bundle.vocab.encode(seqs[u]) for u in users], 50)
    batch = SeqBatch(hist, (hist != 0).sum(1), torch.zeros(len(users), dtype=torch.long))
    with torch.no_grad():
        vecs = bundle.model.user_vectors(batch)  # [B, K, D]
        items = bundle.model.item_vectors()[1:]  # [N, D]
    top = (vecs @ items.T).topk(10, dim=-1).indices + 1  # [B, K, 10] item indices
    distinct, covered = [], []
    for row, user in enumerate(users):
        clusters = {int(np.bincount(item_cluster[top[row, k].numpy()]).argmax()) for k in range(4)}
        distinct.append(len(clusters))
        covered.append(len(clusters & set(planted.planted["user_clusters"][user])))
    # A single-interest model points at exactly one cluster; K=4 interests spread over several,
    # and for a good share of users over two or more of the user's own planted clusters.
    assert np.mean(distinct) > 1.5, np.bincount(distinct)
    assert np.mean(np.asarray(covered) >= 2) > 0.25, np.bincount(covered)


def test_training_outputs(trained) -> None:
    result, out = trained
    assert (out / "training_curve.png").stat().st_size > 1000
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(result.history) >= 1
    assert result.examples_per_second > 0
    assert 0 <= result.best_epoch < len(result.history)


def test_bundle_round_trip_scores_identically(trained) -> None:
    result, _ = trained
    bundle = ModelBundle.load(result.bundle_dir)
    hist = pad_left([[1, 2, 3], [5], []], 50)
    batch = SeqBatch(hist, (hist != 0).sum(1), torch.zeros(3, dtype=torch.long))
    again = ModelBundle.load(bundle.save(result.bundle_dir.parent / "copy"))
    with torch.no_grad():
        assert torch.allclose(bundle.model.score_all(batch), again.model.score_all(batch))
    np.testing.assert_allclose(np.load(result.bundle_dir / ITEM_VECS_FILE), bundle.item_vectors())


def test_bundle_refuses_corrupt_missing_and_foreign(trained, tmp_path) -> None:
    result, _ = trained
    for breakage, message in (
        ("missing", "missing"),
        ("corrupt", "corrupt"),
        ("format", "bundle_format"),
    ):
        copy = tmp_path / breakage
        shutil.copytree(result.bundle_dir, copy)
        if breakage == "missing":
            (copy / ITEM_TOWER_FILE).unlink()
        elif breakage == "corrupt":
            with (copy / ITEM_VECS_FILE).open("r+b") as fh:
                fh.seek(200)
                fh.write(b"\x00garbage")
        else:
            manifest = json.loads((copy / MANIFEST).read_text())
            manifest["bundle_format"] = 999
            (copy / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(BundleMismatchError, match=message):
            ModelBundle.load(copy)


# histories of the toy bundles: several lengths, an empty one, one wider than data.max_len
TOY_HISTORIES = [[1, 2, 3], [5], [], [4, 9, 2, 7, 1, 3, 8, 6, 5, 11], [12, 12, 3]]


def _toy_bundle(name: str, tmp_path: Path) -> ModelBundle:
    """An untrained (seeded) bundle of ``name`` with intent centres and a zero-shot tower,
    saved under ``tmp_path``."""
    overrides = [
        f"model.name={name}",
        "data.max_len=8",
        "model.dim=8",
        "model.num_interests=2",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.ffn_dim=16",
        "model.num_intents=2",
        "model.zero_shot.enabled=true",
        "model.zero_shot.hidden=16",
        *(["loss.causal_targets=prefixes"] if name == "sasrec" else []),
    ]
    cfg = load(None, overrides)
    torch.manual_seed(7)
    model = build_model(cfg.model, 12, None, cfg.data.max_len).eval()
    vocab = Vocabulary.build([f"i{k}" for k in range(1, 13)])
    bundle = ModelBundle(model=model, config=cfg, vocab=vocab)
    bundle.save(tmp_path / name)
    return bundle


@pytest.mark.parametrize("name", sorted(MODELS))
def test_towers_export_separately_and_each_side_loads_alone(name: str, tmp_path) -> None:
    built = _toy_bundle(name, tmp_path)
    out = tmp_path / name
    files = read_manifest(out).files
    assert not (out / MODEL_FILE).exists() and MODEL_FILE not in files
    for tower_file in (ITEM_TOWER_FILE, USER_TOWER_FILE):
        assert files[tower_file] == file_sha256(out / tower_file)
    item_state = torch.load(out / ITEM_TOWER_FILE, weights_only=True)
    user_state = torch.load(out / USER_TOWER_FILE, weights_only=True)
    assert item_state.keys() == built.model.item_tower.state_dict().keys()
    shared = tuple(f"{p}." for p in item_tower_prefixes(built.model))
    assert len(shared) >= 2  # the user tower reads the history through the item tower
    assert not [k for k in user_state if k.startswith(shared)]  # no item-tower entry
    full = built.model.state_dict()
    assert user_state.keys() == {k for k in full if not k.startswith(shared)}
    assert any(k.startswith("user_tower.intents.") for k in user_state)
    assert any(k.startswith("zero_shot.") for k in user_state)
    whole = ModelBundle.load(out)
    for key, value in full.items():
        assert torch.equal(whole.model.state_dict()[key], value), key
    np.testing.assert_array_equal(
        whole.score_users(TOY_HISTORIES), built.score_users(TOY_HISTORIES)
    )
    items = ModelBundle.load_item_tower(out)
    np.testing.assert_array_equal(items.item_vectors(), np.load(out / ITEM_VECS_FILE))
    np.testing.assert_array_equal(items.item_vectors([3, 1]), built.item_vectors()[[3, 1]])
    users = ModelBundle.load_user_tower(out)
    expected = built.user_vectors(TOY_HISTORIES)
    assert users.user_vectors(TOY_HISTORIES).shape == (5, built.model.num_interests, 8)
    np.testing.assert_allclose(users.user_vectors(TOY_HISTORIES), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        users.score_users(TOY_HISTORIES), built.score_users(TOY_HISTORIES), rtol=1e-5, atol=1e-6
    )
    profile = ["segment=s1", "age=a2"]
    for recent in ([], ["i1", "i4"]):
        np.testing.assert_allclose(
            users.user_vectors_from_profile(profile, recent),
            built.user_vectors_from_profile(profile, recent),
            rtol=1e-5,
            atol=1e-6,
        )


def _rewrite_as_single_file(directory: Path, bundle: ModelBundle) -> None:
    """Turn a saved bundle into the layout written before the towers were split: one
    ``model.pt`` with the whole TwoTower's state dict, listed in the manifest."""
    torch.save(bundle.model.state_dict(), directory / MODEL_FILE)
    manifest = read_manifest(directory)
    files = {k: v for k, v in manifest.files.items() if k not in (ITEM_TOWER_FILE, USER_TOWER_FILE)}
    files[MODEL_FILE] = file_sha256(directory / MODEL_FILE)
    for tower_file in (ITEM_TOWER_FILE, USER_TOWER_FILE):
        (directory / tower_file).unlink()
    write_manifest(directory, manifest.model_copy(update={"files": files}))


@pytest.mark.parametrize("name", ["comirec_sa", "multi_tower"])
def test_single_file_bundle_of_before_the_split_still_loads(name: str, tmp_path) -> None:
    built = _toy_bundle(name, tmp_path)
    old = tmp_path / name
    _rewrite_as_single_file(old, built)
    whole = ModelBundle.load(old)
    np.testing.assert_array_equal(
        whole.score_users(TOY_HISTORIES), built.score_users(TOY_HISTORIES)
    )
    items = ModelBundle.load_item_tower(old)
    np.testing.assert_array_equal(items.item_vectors(), built.item_vectors())
    users = ModelBundle.load_user_tower(old)
    np.testing.assert_allclose(
        users.user_vectors(TOY_HISTORIES), built.user_vectors(TOY_HISTORIES), rtol=1e-5, atol=1e-6
    )
    again = whole.save(tmp_path / "resaved")  # saving it again writes the split layout
    assert (again / ITEM_TOWER_FILE).is_file() and not (again / MODEL_FILE).exists()
    resaved = ModelBundle.load(again)
    np.testing.assert_array_equal(
        resaved.score_users(TOY_HISTORIES), built.score_users(TOY_HISTORIES)
    )


def test_a_corrupt_or_missing_tower_file_is_refused_by_what_reads_it(tmp_path) -> None:
    _toy_bundle("comirec_dr", tmp_path)
    loaders = {
        ITEM_TOWER_FILE: (ModelBundle.load, ModelBundle.load_item_tower),
        USER_TOWER_FILE: (ModelBundle.load, ModelBundle.load_user_tower),
    }
    readers_of_the_other = {
        ITEM_TOWER_FILE: ModelBundle.load_user_tower,
        USER_TOWER_FILE: ModelBundle.load_item_tower,
    }
    for tower_file, refusing in loaders.items():
        for breakage in ("corrupt", "missing"):
            copy = tmp_path / f"{tower_file}-{breakage}"
            shutil.copytree(tmp_path / "comirec_dr", copy)
            if breakage == "missing":
                (copy / tower_file).unlink()
            else:
                with (copy / tower_file).open("r+b") as fh:
                    fh.seek(64)
                    fh.write(b"\x00garbage")
            expected = "corrupt \\(checksum\\)" if breakage == "corrupt" else "missing"
            for loader in refusing:
                with pytest.raises(BundleMismatchError, match=f"file {tower_file} is {expected}"):
                    loader(copy)
            readers_of_the_other[tower_file](copy)  # the other side never reads this file


def test_resume_continues_from_checkpoint(planted, tmp_path) -> None:
    small = [*OVERRIDES, "optim.max_epochs=1", "model.dim=8"]
    first = train(load(None, small), planted, tmp_path, progress=False)
    assert len(first.history) == 1
    resumed = train(
        load(None, [*small[:-2], "optim.max_epochs=2", "model.dim=8"]),
        planted,
        tmp_path,
        resume=True,
        progress=False,
    )
    assert [h["epoch"] for h in resumed.history] == [0, 1]


def test_resume_restores_schedule_and_weight_average(planted, tmp_path) -> None:
    """1 epoch + resume equals 2 epochs straight, with a decaying lr and an EMA of the weights."""
    base = [
        *OVERRIDES,
        "model.dim=8",
        "optim.max_epochs=2",
        "optim.lr_schedule=linear",
        "optim.ema_decay=0.9",
        "optim.patience=5",
    ]
    straight = train(load(None, base), planted, tmp_path / "straight", progress=False)
    assert straight.history[1]["lr"] < straight.history[0]["lr"]
    cut = tmp_path / "cut"
    first = train(load(None, [*base, "optim.max_minutes=1e-6"]), planted, cut, progress=False)
    assert len(first.history) == 1  # the time budget stopped it after epoch 0
    resumed = train(load(None, base), planted, cut, resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["lr"] == pytest.approx(b["lr"])
        assert a["valid/recall@20"] == pytest.approx(b["valid/recall@20"], abs=1e-6)


def test_budget_horizon_ends_training_with_the_schedule(planted, tmp_path) -> None:
    """schedule_horizon=budget: the decay spans the epochs that fit, and training ends with it."""
    overrides = [
        *OVERRIDES,
        "model.dim=8",
        "optim.max_epochs=3",
        "optim.lr_schedule=cosine",
        "optim.schedule_horizon=budget",
        "optim.max_minutes=60",
        "optim.patience=5",
    ]
    result = train(load(None, overrides), planted, tmp_path, progress=False)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.history[-1]["lr"] < 0.05 * 0.005 < result.history[0]["lr"]
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["horizon"] == {"epochs": 3}
    assert ckpt["state"]["wall"] >= ckpt["state"]["elapsed"] > 0


# Beauty's configs/beauty_sasrec.yaml at toy size: post-LN SASRec with dropout, sampled softmax
# over uniform negatives, AdamW with weight decay, a warm-up epoch and a cosine decay fitted to
# the time budget.
BEAUTY_TOY = [
    "model.name=sasrec",
    "model.dim=16",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.ffn_dim=32",
    "model.dropout=0.3",
    "model.norm=post",
    "loss.kind=sampled_softmax",
    "loss.sampler=uniform",
    "loss.num_negatives=100",
    "optim.lr=0.002",
    "optim.lr_schedule=cosine",
    "optim.schedule_horizon=budget",
    "optim.warmup_epochs=1",
    "optim.weight_decay=0.5",
    "optim.batch_size=64",
    "optim.max_epochs=3",
    "optim.patience=50",
    "optim.max_minutes=60",
    "optim.num_threads=1",
    "eval.metric=ndcg@10",
]


def _without_seconds(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _bundle_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The full state dict of a bundle's model (both tower files joined)."""
    return ModelBundle.load(directory).model.state_dict()


def test_resume_is_exact_for_the_beauty_recipe(tmp_path) -> None:
    """3 epochs straight == 1 epoch + resume for 2 more: same weights, same history, bit for bit
    (dropout masks, sampled negatives and the fitted schedule all continue where they were)."""
    data = generate(num_users=300, num_items=120, num_clusters=6, mean_len=12, seed=7)
    straight = train(load(None, BEAUTY_TOY), data, tmp_path / "straight", progress=False)
    cut = tmp_path / "cut"
    first = train(load(None, [*BEAUTY_TOY, "optim.max_minutes=1e-6"]), data, cut, progress=False)
    assert len(first.history) == 1  # the time budget stopped it after epoch 0
    assert len(torch.load(cut / "checkpoint.pt", weights_only=False)["rng"]) == 1
    resumed = train(load(None, BEAUTY_TOY), data, cut, resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert _without_seconds(resumed.history) == _without_seconds(straight.history)
    assert resumed.metrics == straight.metrics
    last = [
        torch.load(d / "checkpoint.pt", weights_only=False) for d in (tmp_path / "straight", cut)
    ]
    _assert_same_weights(last[0]["model"], last[1]["model"])
    _assert_same_weights(*(_bundle_weights(r.bundle_dir) for r in (straight, resumed)))


def test_patience_stops_training_and_keeps_the_best_epoch(tmp_path, caplog) -> None:
    """With 30 items hr@30 ranks every item, so validation cannot improve after epoch 0:
    patience 2 stops at epoch 2 of 20 and the bundle holds epoch 0's weights."""
    data = generate(num_users=200, num_items=30, num_clusters=3, mean_len=10, seed=2)
    small = [
        *OVERRIDES,
        "model.dim=8",
        "eval.ks=[5,10,20,30]",
        "eval.metric=hr@30",
        "optim.patience=2",
    ]
    with caplog.at_level(logging.INFO, logger="mirec.training.loop"):
        stopped = train(
            load(None, [*small, "optim.max_epochs=20"]), data, tmp_path / "p", progress=False
        )
    assert [h["epoch"] for h in stopped.history] == [0, 1, 2]
    assert stopped.best_epoch == 0
    assert "early stop: valid hr@30 has not improved for 2 epochs; keeping epoch 0" in caplog.text
    assert stopped.metrics["valid/hr@30"] == stopped.history[0]["valid/hr@30"] == 1.0
    trained_on = torch.load(tmp_path / "p" / "checkpoint.pt", weights_only=False)["model"]
    kept = _bundle_weights(stopped.bundle_dir)
    assert not torch.equal(
        trained_on["item_tower.embedding.weight"], kept["item_tower.embedding.weight"]
    )
    one = train(load(None, [*small, "optim.max_epochs=1"]), data, tmp_path / "one", progress=False)
    _assert_same_weights(kept, _bundle_weights(one.bundle_dir))


def test_progress_bar_reports_each_epoch_on_stderr(tmp_path, capsys) -> None:
    data = generate(num_users=100, num_items=60, num_clusters=3, mean_len=8, seed=4)
    cfg = load(None, [*OVERRIDES, "model.dim=8", "optim.max_epochs=2"])
    train(cfg, data, tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "epoch 0" in err and "epoch 1" in err
    examples = sum(len(s) - 1 for s in prepare(cfg, data).split.train.sequences)
    assert f"0/{examples} [" in err and "ex/s" in err  # one bar over the epoch's examples
