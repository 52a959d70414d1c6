"""Cold-start benchmark: cold items (content tower) and cold users (MAIL zero-shot tower).

Cold items (docs/protocols.md): 10% of the items withheld from training; the content tower with
and without multi-view pretraining against popularity, a randomly initialised item tower and the
attributes of a trained id+attribute model, on test users whose target is withheld (cold) and
on the others (warm). Cold users: 10% of the users withheld; 0, 1, 3, 5 first events as history;
MAIL (the zero-shot tower refitted and the blend weight chosen on the validation cold users by
the training run, ``mirec.training.zero_shot``, as ``mirec train`` does) against the plain user
tower, popularity and demographic popularity. Every model is trained once per seed (``--seeds``,
default 0,1,2); the tables give mean ± std over the seeds (the withheld items and users are the
same for every seed, only the training randomness changes). Each seed's result is kept under
``--work`` (``seed<k>.json``); ``--reuse`` reads those instead of training again, so seeds can run
in separate processes and be aggregated after. Writes
benchmarks/results/cold_start_<dataset>.{json,md}.

    python benchmarks/bench_cold_start.py --data ../shared/data/ml-100k [--minutes 2] [--seeds 0,1]
    python benchmarks/bench_cold_start.py --data demo --parts users   # the generated data
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
from mirec.training import Prepared, TrainResult, data_fingerprint, train_worker

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Sports and Yelp (protocol B, no user profiles) run the Beauty content config unchanged; the
# generated data (``--data demo``, planted profiles) runs the ml-100k configs unchanged.
CONFIGS = {
    "ml-100k": ("ml100k_content", "ml100k_mail"),
    "synthetic": ("ml100k_content", "ml100k_mail"),
    "Beauty": ("beauty_content", None),
    "Sports_and_Outdoors": ("beauty_content", None),
    "Yelp": ("beauty_content", None),
}
ITEM_KEYS = ("recall@20", "recall@50", "ndcg@20", "ndcg@50")
USER_KEYS = ("recall@20", "recall@50", "hr@20", "hr@50")
PARTS = {"items": "cold_items", "users": "cold_users"}
MAIL = "MAIL (zero-shot at 0, blend at 1-5)"
ID_ATTR = "id + attributes model (cold = sum of attribute embeddings)"
log = logging.getLogger("bench_cold_start")


def _metrics(scorer: Scorer, data: EvalData, cfg: TrainConfig, keys: tuple[str, ...]) -> dict:
    out = evaluate_scorer(scorer, data, cfg.eval, cfg.data.max_len)
    return {k: out[k] for k in keys} | {"users": len(data.user_ids)}


def _run(
    cfg: TrainConfig, prep: Prepared, out: Path
) -> tuple[ModelBundle, TrainResult, dict[str, float]]:
    """Train one model; its bundle, result and timing."""
    started = time.perf_counter()
    result = train_worker(cfg, prep, out, progress=False)
    bundle = ModelBundle.load(result.bundle_dir)
    timing = {
        "train_s": round(result.train_seconds, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return bundle, result, timing | {"best_epoch": result.best_epoch}


def _train(cfg: TrainConfig, prep: Prepared, out: Path) -> tuple[TwoTower, dict[str, float]]:
    bundle, _, timing = _run(cfg, prep, out)
    return bundle.model, timing


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
    rows[ID_ATTR] = _item_rows(ItemOverrideScorer(model, vecs), cis, attr_cfg) | timing
    return {"withheld_items": int(cold.sum()), "num_items": vocab.size, "rows": rows}


def _override(cfg: TrainConfig, tree: dict[str, Any]) -> TrainConfig:
    base = cfg.model_dump()
    for section, values in tree.items():
        base[section] = {**base[section], **values}
    return TrainConfig.model_validate(base)


def cold_users(ds: Any, cfg: TrainConfig, work: Path) -> dict[str, Any]:
    """Train the ranking tower with the zero-shot tower; evaluate at each history length.

    The training run itself refits the zero-shot tower and chooses the blend weight on the
    validation cold users (``mirec.training.zero_shot.refit_and_choose``, as ``mirec train``
    does): the MAIL row scores the bundle it wrote, with the blend its config carries.
    """
    vocab = Vocabulary.build(ds.items[ITEM_ID].astype(str))
    cus = split_cold_users(build_sequences(ds.events, vocab), vocab.size, cfg.data.max_len)
    zs = cfg.model.zero_shot
    train_profiles = user_profile_matrix(ds.users, cus.split.train.user_ids, zs)
    valid_profiles = user_profile_matrix(ds.users, cus.split.valid.user_ids, zs)
    fp = data_fingerprint(ds.events)
    prep = Prepared(vocab, cus.split, None, fp, train_profiles, valid_profiles)
    bundle, result, timing = _run(cfg, prep, work / "mail")
    if result.zero_shot is None:
        raise RuntimeError("the training run made no zero-shot choice (see its log)")
    model, served = bundle.model, bundle.config  # the kept zero-shot state, the chosen blend

    def scorers(data: EvalData) -> dict[str, Scorer]:
        profiles = torch.from_numpy(user_profile_matrix(ds.users, data.user_ids, zs))
        return {
            "Popularity": Popularity(cus.split.item_counts),
            "demographic popularity": DemographicPopularity(
                cus.split.train.sequences, train_profiles, vocab.size, profiles
            ),
            "user tower alone": model,
            MAIL: ZeroShotScorer(model, served.model, profiles),
        }

    table: dict[str, dict[int, dict]] = {}
    for h, data in cus.test.items():
        for name, scorer in scorers(data).items():
            table.setdefault(name, {})[h] = _metrics(scorer, data, cfg, USER_KEYS)
    choice = result.zero_shot
    return {
        "blend": choice["blend"],
        "refit": choice["refit"],
        "zero_shot": choice,
        "rows": table,
        "timing": timing,
    }


def _leaves(tree: Any, prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], float]:
    """Numeric leaves of nested dicts, keyed by their path."""
    if isinstance(tree, dict):
        out: dict[tuple[Any, ...], float] = {}
        for k, v in tree.items():
            out |= _leaves(v, (*prefix, k))
        return out
    if isinstance(tree, int | float) and not isinstance(tree, bool):
        return {prefix: float(tree)}
    return {}


def _set(tree: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(str(key), {})
    tree[str(path[-1])] = value


def aggregate(per_seed: dict[int, dict[str, Any]], part: str) -> dict[str, Any]:
    """Mean and std (population, over seeds) of every metric of ``part`` in the seeds' results.

    Returns the part's rows with each number replaced by ``{"mean", "std", "n"}``.
    """
    runs = [r[part] for r in per_seed.values() if part in r]
    if not runs:
        return {}
    values: dict[tuple[Any, ...], list[float]] = {}
    for run in runs:
        for path, v in _leaves(run["rows"]).items():
            values.setdefault(path, []).append(v)
    rows: dict[str, Any] = {}
    for path, vs in values.items():
        _set(rows, path, {"mean": float(np.mean(vs)), "std": float(np.std(vs)), "n": len(vs)})
    per_seed_only = ("rows", "timing", "blend", "blend_valid_recall@50", "refit", "zero_shot")
    out = {k: v for k, v in runs[0].items() if k not in per_seed_only}
    return out | {"rows": rows, "seeds": len(runs)}


def _ms(cell: dict[str, float], digits: int = 4) -> str:
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def write_markdown(name: str, result: dict[str, Any], path: Path) -> None:
    lines = [f"# Cold start on {name}", "", result["note"], ""]
    items = result.get("cold_items")
    if items:
        lines += [
            f"## Cold items ({items['withheld_items']} of {items['num_items']} items withheld; "
            f"mean ± std over {items['seeds']} seeds)",
            "",
            _budget(items),
            "",
        ]
        headers = (
            ["model"]
            + [f"cold {k}" for k in ITEM_KEYS[:2]]
            + [f"warm {k}" for k in ITEM_KEYS[:2]]
            + ["cold ndcg@50", "valid cold recall@50", "train s"]
        )
        body = []
        for model, row in items["rows"].items():
            body.append(
                [
                    model,
                    *[_ms(row["test_cold"][k]) for k in ITEM_KEYS[:2]],
                    *[_ms(row["test_warm"][k]) for k in ITEM_KEYS[:2]],
                    _ms(row["test_cold"]["ndcg@50"]),
                    _ms(row["valid_cold"]["recall@50"]),
                    f"{row['train_s']['mean']:.0f}" if "train_s" in row else "-",
                ]
            )
        any_row = next(iter(items["rows"].values()))
        lines += [
            format_table(headers, body),
            "",
            f"Test users with a cold target: {any_row['test_cold']['users']['mean']:.0f}; "
            f"warm: {any_row['test_warm']['users']['mean']:.0f}.",
            "",
        ]
        lines += _item_summary(items["rows"])
    users = result.get("cold_users")
    if users:
        blends = users.get("blend_per_seed", {})
        lines += [
            f"## Cold users (mean ± std over {users['seeds']} seeds; blend weight chosen on "
            f"validation per seed: {blends})",
            "",
            _budget(users) + _refit_seconds(users),
            "",
        ]
        lengths = sorted(next(iter(users["rows"].values())), key=int)
        headers = ["model"] + [f"h={h} {k}" for h in lengths for k in ("recall@20", "recall@50")]
        body = [
            [model] + [_ms(row[h][k]) for h in lengths for k in ("recall@20", "recall@50")]
            for model, row in users["rows"].items()
        ]
        lines += [format_table(headers, body), ""]
        lines += [
            "Zero-shot refit chosen on validation (h = 0 recall@50) per seed: "
            f"{users.get('refit_per_seed', {})}.",
            "",
        ]
        lines += [
            "hr@50 (mean over seeds): "
            + "; ".join(
                f"{model}: " + ", ".join(f"h={h} {row[h]['hr@50']['mean']:.3f}" for h in lengths)
                for model, row in users["rows"].items()
            ),
            "",
        ]
    path.write_text("\n".join(lines))


def _budget(part: dict[str, Any]) -> str:
    b = part.get("budget") or {}
    if b.get("epochs"):
        return f"Budget per model: {b['epochs']} epochs (capped at {b['minutes']} minutes)."
    return f"Budget per model: {b.get('minutes', '?')} minutes of training (wall clock)."


def _refit_seconds(users: dict[str, Any]) -> str:
    """The MAIL row's refit and blend choice time, outside its training budget."""
    secs = users.get("refit_seconds_per_seed") or {}
    if not any(v is not None for v in secs.values()):
        return ""
    return f" MAIL's zero-shot refit and blend choice after that, seconds per seed: {secs}."


def _item_summary(rows: dict[str, Any]) -> list[str]:
    """The targets' ratios: content cold vs warm recall@50, content vs id-based warm recall@20,
    for the content tower (with or without pretraining) with the better validation cold
    recall@50."""
    names = [
        n for n in ("content tower + pretraining", "content tower, no pretraining") if n in rows
    ]
    ref = rows.get(ID_ATTR)
    if not names or not ref:
        return []
    name = max(names, key=lambda n: rows[n]["valid_cold"]["recall@50"]["mean"])
    content = rows[name]
    cold50 = content["test_cold"]["recall@50"]["mean"]
    warm50 = content["test_warm"]["recall@50"]["mean"]
    warm20, ref20 = content["test_warm"]["recall@20"]["mean"], ref["test_warm"]["recall@20"]["mean"]
    return [
        f"{name} (chosen on validation cold recall@50): cold recall@50 / warm recall@50 = "
        f"{cold50:.4f} / {warm50:.4f} = {cold50 / max(warm50, 1e-12):.2f}; warm recall@20 vs "
        f"the id + attributes model: {warm20:.4f} vs {ref20:.4f} "
        f"({100 * (warm20 / max(ref20, 1e-12) - 1):+.1f}%).",
        "",
    ]


def _parse_seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def run_seed(
    ds: Any, seed: int, args: argparse.Namespace, configs: tuple[str | None, ...]
) -> dict[str, Any]:
    """Both parts for one seed; kept as ``seed<k>.json`` under the work folder."""
    work = args.work / ds.name
    cached = work / f"seed{seed}.json"
    parts = [p for p in args.parts.split(",") if p]
    if args.reuse and cached.exists():
        kept = json.loads(cached.read_text())
        if all(PARTS[p] in kept for p in parts):
            log.info("seed %d: reusing %s", seed, cached)
            return kept
    overrides = [f"optim.max_minutes={args.minutes}", f"seed={seed}"]
    if args.epochs:  # the same work for every model, however loaded the machine is
        overrides.append(f"optim.max_epochs={args.epochs}")
    out: dict[str, Any] = {"seed": seed}
    for part, cfg_name in zip(("items", "users"), configs, strict=True):
        if part not in parts or cfg_name is None:
            continue
        cfg = load(ROOT / "configs" / f"{cfg_name}.yaml", overrides)
        run = cold_items if part == "items" else cold_users
        budget = {"minutes": args.minutes, "epochs": args.epochs or None}
        out[PARTS[part]] = run(ds, cfg, work / f"seed{seed}") | {
            "config": cfg_name,
            "budget": budget,
        }
    if cached.exists():  # a run of one part keeps the other part's last result
        kept = json.loads(cached.read_text())
        out = {k: v for k, v in kept.items() if k in PARTS.values() and k not in out} | out
    work.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(out, indent=2, default=str))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget per model")
    parser.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="epoch budget per model (0: the config's); --minutes stays the cap",
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "cold_start")
    parser.add_argument("--parts", default="items,users")
    parser.add_argument(
        "--reuse", action="store_true", help="read seeds already run under --work (seed<k>.json)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="run the seeds, write no results (a worker)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ds = load_dataset(args.data)
    configs = CONFIGS.get(ds.name, CONFIGS["ml-100k"])
    seeds = _parse_seeds(args.seeds)
    started = time.perf_counter()
    per_seed = {seed: run_seed(ds, seed, args, configs) for seed in seeds}
    if args.no_write:
        return
    result: dict[str, Any] = {
        "dataset": ds.name,
        "seeds": seeds,
        "minutes_per_model": args.minutes,
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
        "note": f"Seeds {seeds}; settings chosen on validation only; mean ± std (population) "
        "over the seeds. Training budget per model: see each part.",
        "wall_s": round(time.perf_counter() - started, 1),
    }
    for part in ("cold_items", "cold_users"):
        agg = aggregate(per_seed, part)
        if agg:
            result[part] = agg
    if "cold_users" in result:
        users = {s: r["cold_users"] for s, r in per_seed.items() if "cold_users" in r}
        result["cold_users"]["blend_per_seed"] = {s: u["blend"] for s, u in users.items()}
        result["cold_users"]["refit_per_seed"] = {
            s: u.get("refit", {}).get("chosen") for s, u in users.items()
        }
        result["cold_users"]["refit_seconds_per_seed"] = {
            s: (u.get("zero_shot") or {}).get("seconds") for s, u in users.items()
        }
    result["per_seed"] = per_seed
    stem = f"cold_start_{ds.name}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str))
    write_markdown(ds.name, result, RESULTS / f"{stem}.md")
    log.info("wrote %s", RESULTS / f"{stem}.md")


if __name__ == "__main__":
    main()
