"""Cold-start benchmark: cold items (content tower) and cold users (MAIL zero-shot tower).

Cold items (docs/protocols.md): 10% of the items withheld from training; the content tower with
and without multi-view pretraining against popularity, a randomly initialised item tower and the
attributes of a trained id+attribute model, on test users whose target is withheld (cold) and
on the others (warm). Cold users: 10% of the users withheld; 0, 1, 3, 5 first events as history;
the MAIL blend (weight chosen on the validation cold users) against the plain user tower,
popularity and demographic popularity. Writes benchmarks/results/cold_start_<dataset>.{json,md}.

    python benchmarks/bench_cold_start.py --data ../shared/data/ml-100k [--minutes 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirec.bundle import ModelBundle
from mirec.config import TrainConfig, load
from mirec.data.attributes import attribute_matrix, content_matrix, user_profile_matrix
from mirec.data.cold_splits import ColdItemSplit, split_cold_items, split_cold_users
from mirec.data.loaders import load_dataset
from mirec.data.splits import EvalData, build_sequences
from mirec.data.vocab import Vocabulary
from mirec.evaluate import Scorer, evaluate_scorer
from mirec.models.baselines import Popularity
from mirec.models.cold_start import DemographicPopularity, ItemOverrideScorer, ZeroShotScorer
from mirec.models.content_tower import ContentItemTower
from mirec.models.two_tower import TwoTower
from mirec.schema import ITEM_ID
from mirec.tables import format_table
from mirec.training import Prepared, data_fingerprint, train_worker

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = {"ml-100k": ("ml100k_content", "ml100k_mail"), "Beauty": ("beauty_content", None)}
ITEM_KEYS = ("recall@20", "recall@50", "ndcg@20", "ndcg@50")
USER_KEYS = ("recall@20", "recall@50", "hr@20", "hr@50")
BLENDS = (0.25, 0.5, 0.75, 1.0)
log = logging.getLogger("bench_cold_start")


def _metrics(scorer: Scorer, data: EvalData, cfg: TrainConfig, keys: tuple[str, ...]) -> dict:
    out = evaluate_scorer(scorer, data, cfg.eval, cfg.data.max_len)
    return {k: out[k] for k in keys} | {"users": len(data.user_ids)}


def _train(cfg: TrainConfig, prep: Prepared, out: Path) -> tuple[TwoTower, dict[str, float]]:
    started = time.perf_counter()
    result = train_worker(cfg, prep, out, progress=False)
    model = ModelBundle.load(result.bundle_dir).model
    timing = {
        "train_s": round(result.train_seconds, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return model, timing | {"best_epoch": result.best_epoch}


def _item_rows(scorer: Scorer, cis: ColdItemSplit, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "test_cold": _metrics(scorer, cis.test_cold, cfg, ITEM_KEYS),
        "test_warm": _metrics(scorer, cis.test_warm, cfg, ITEM_KEYS),
        "valid_cold": _metrics(scorer, cis.valid_cold, cfg, ITEM_KEYS),
    }


def _random_cold_vectors(
    model: TwoTower, cold: np.ndarray, full: torch.Tensor, seed: int
) -> torch.Tensor:
    """Item vectors of ``model`` with the cold items embedded by a freshly initialised content
    tower, rescaled to the mean norm of the trained warm vectors."""
    torch.manual_seed(seed)
    tower = model.item_tower
    assert isinstance(tower, ContentItemTower)
    fresh = ContentItemTower(tower.num_items, tower.dim, full, tower.cfg).eval()
    with torch.no_grad():
        vecs = model.item_vectors().clone()
        rand = fresh.content_vectors(full[torch.from_numpy(cold)])
        warm_norm = vecs[torch.from_numpy(~cold)][1:].norm(dim=-1).mean()
        vecs[torch.from_numpy(cold)] = (
            rand / rand.norm(dim=-1, keepdim=True).clamp(min=1e-9) * warm_norm
        )
    return vecs


def cold_items(ds: Any, cfg: TrainConfig, work: Path) -> dict[str, Any]:
    """Train the content tower (with and without pretraining) and the id+attribute model."""
    vocab = Vocabulary.build(ds.items[ITEM_ID].astype(str))
    cis = split_cold_items(build_sequences(ds.events, vocab), vocab.ids, cfg.data.max_len)
    cold, fp = cis.cold_items, data_fingerprint(ds.events)
    full = content_matrix(ds.items, vocab, cfg.model.content)
    rows: dict[str, Any] = {"Popularity": _item_rows(Popularity(cis.split.item_counts), cis, cfg)}
    for name, slug, overrides in (
        ("content tower + pretraining", "content_pretrained", {}),
        ("content tower, no pretraining", "content", {"pretrain": {"epochs": 0}}),
    ):
        run_cfg = _override(cfg, overrides)
        train_m = full.copy()
        train_m[cold] = 0  # withheld items have no content at training time either
        model, timing = _train(run_cfg, Prepared(vocab, cis.split, train_m, fp), work / slug)
        model.item_tower.item_attributes = torch.from_numpy(full)
        rows[name] = _item_rows(model, cis, run_cfg) | timing
        if "random" not in rows and not overrides:
            scorer = ItemOverrideScorer(
                model, _random_cold_vectors(model, cold, torch.from_numpy(full), cfg.seed)
            )
            rows["random item tower (cold items)"] = _item_rows(scorer, cis, run_cfg)
    attr_cfg = _override(
        cfg,
        {
            "model": {"item_tower": "id", "use_attributes": True, "attribute_pool": "sum"},
            "pretrain": {"epochs": 0},
        },
    )
    attrs = attribute_matrix(ds.items, vocab)
    train_a = attrs.copy()
    train_a[cold] = 0
    model, timing = _train(attr_cfg, Prepared(vocab, cis.split, train_a, fp), work / "id_attr")
    model.item_tower.item_attributes = torch.from_numpy(attrs)
    with torch.no_grad():
        vecs = model.item_vectors().clone()
        vecs[torch.from_numpy(cold)] = model.item_tower.attribute_vectors()[torch.from_numpy(cold)]
    rows["id + attributes model (cold = sum of attribute embeddings)"] = (
        _item_rows(ItemOverrideScorer(model, vecs), cis, attr_cfg) | timing
    )
    return {"withheld_items": int(cold.sum()), "num_items": vocab.size, "rows": rows}


def _override(cfg: TrainConfig, tree: dict[str, Any]) -> TrainConfig:
    base = cfg.model_dump()
    for section, values in tree.items():
        base[section] = {**base[section], **values}
    return TrainConfig.model_validate(base)


def cold_users(ds: Any, cfg: TrainConfig, work: Path) -> dict[str, Any]:
    """Train the ranking tower with the zero-shot tower; evaluate at each history length."""
    vocab = Vocabulary.build(ds.items[ITEM_ID].astype(str))
    cus = split_cold_users(build_sequences(ds.events, vocab), vocab.size, cfg.data.max_len)
    zs = cfg.model.zero_shot
    train_profiles = user_profile_matrix(ds.users, cus.split.train.user_ids, zs)
    prep = Prepared(vocab, cus.split, None, data_fingerprint(ds.events), train_profiles)
    model, timing = _train(cfg, prep, work / "mail")

    def scorers(data: EvalData, blend: float) -> dict[str, Scorer]:
        profiles = torch.from_numpy(user_profile_matrix(ds.users, data.user_ids, zs))
        blended = _override(cfg, {"model": {"zero_shot": {**zs.model_dump(), "blend": blend}}})
        return {
            "Popularity": Popularity(cus.split.item_counts),
            "demographic popularity": DemographicPopularity(
                cus.split.train.sequences, train_profiles, vocab.size, profiles
            ),
            "user tower alone": model,
            "MAIL (zero-shot at 0, blend at 1-5)": ZeroShotScorer(model, blended.model, profiles),
        }

    valid_mail = {
        w: np.mean(
            [
                _metrics(
                    scorers(cus.valid[h], w)["MAIL (zero-shot at 0, blend at 1-5)"],
                    cus.valid[h],
                    cfg,
                    USER_KEYS,
                )["recall@50"]
                for h in (1, 3)
            ]
        )
        for w in BLENDS
    }
    best = max(valid_mail, key=lambda w: valid_mail[w])
    table: dict[str, dict[int, dict]] = {}
    for h, data in cus.test.items():
        for name, scorer in scorers(data, best).items():
            table.setdefault(name, {})[h] = _metrics(scorer, data, cfg, USER_KEYS)
    return {"blend_valid_recall@50": valid_mail, "blend": best, "rows": table, "timing": timing}


def write_markdown(name: str, result: dict[str, Any], path: Path) -> None:
    lines = [f"# Cold start on {name}", "", result["note"], ""]
    items = result.get("cold_items")
    if items:
        lines += [
            f"## Cold items ({items['withheld_items']} of {items['num_items']} items withheld)",
            "",
        ]
        headers = (
            ["model"]
            + [f"cold {k}" for k in ITEM_KEYS]
            + [f"warm {k}" for k in ITEM_KEYS[:2]]
            + ["valid cold recall@50", "train s"]
        )
        body = []
        for model, row in items["rows"].items():
            cells = [f"{row['test_cold'][k]:.4f}" for k in ITEM_KEYS] + [
                f"{row['test_warm'][k]:.4f}" for k in ITEM_KEYS[:2]
            ]
            body.append(
                [
                    model,
                    *cells,
                    f"{row['valid_cold']['recall@50']:.4f}",
                    str(row.get("train_s", "-")),
                ]
            )
        any_row = next(iter(items["rows"].values()))
        lines += [
            format_table(headers, body),
            "",
            f"Test users with a cold target: {any_row['test_cold']['users']}; "
            f"warm: {any_row['test_warm']['users']}.",
            "",
        ]
    users = result.get("cold_users")
    if users:
        lines += [f"## Cold users (blend weight {users['blend']} chosen on validation)", ""]
        lengths = sorted(next(iter(users["rows"].values())))
        headers = ["model"] + [
            f"h={h} {k}" for h in lengths for k in ("recall@20", "recall@50", "hr@50")
        ]
        body = [
            [model]
            + [f"{row[h][k]:.4f}" for h in lengths for k in ("recall@20", "recall@50", "hr@50")]
            for model, row in users["rows"].items()
        ]
        lines += [
            format_table(headers, body),
            "",
            "Validation recall@50 (mean of h=1, 3) per blend weight: "
            f"{users['blend_valid_recall@50']}.",
            "",
        ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "cold_start")
    parser.add_argument("--parts", default="items,users")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ds = load_dataset(args.data)
    item_cfg, user_cfg = CONFIGS.get(ds.name, CONFIGS["ml-100k"])
    overrides = [f"optim.max_minutes={args.minutes}", f"seed={args.seed}"]
    result: dict[str, Any] = {
        "dataset": ds.name,
        "seed": args.seed,
        "minutes_per_model": args.minutes,
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        "note": f"One seed ({args.seed}), {args.minutes}-minute training budget per model; "
        "settings chosen on validation only.",
    }
    stem = f"cold_start_{ds.name}"
    previous = RESULTS / f"{stem}.json"
    if previous.exists():  # a run of one part keeps the other part's last result
        kept = json.loads(previous.read_text())
        result |= {k: kept[k] for k in ("cold_items", "cold_users") if k in kept}
    started = time.perf_counter()
    parts = {
        "items": ("cold_items", item_cfg, cold_items),
        "users": ("cold_users", user_cfg, cold_users),
    }
    for part in args.parts.split(","):
        key, cfg_name, run = parts[part]
        if cfg_name is None:
            continue
        cfg = load(ROOT / "configs" / f"{cfg_name}.yaml", overrides)
        result[key] = run(ds, cfg, args.work / ds.name) | {"config": cfg_name}
        result["wall_s"] = round(time.perf_counter() - started, 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str))
        write_markdown(ds.name, result, RESULTS / f"{stem}.md")
    log.info("wrote %s", RESULTS / f"{stem}.md")


if __name__ == "__main__":
    main()
