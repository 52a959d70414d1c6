"""Quality benchmark: baselines and non-neural floors on real data, beside published anchors.

Beauty, Sports and Yelp (S3-Rec files, protocol B leave-one-out, full ranking), ml-100k
(RecBole files) and Yelp again (``yelp-a``) with protocol A (the ComiRec user split).
Each neural model trains in its own process (``mirec train``) so its wall time and peak
memory are its own. Writes benchmarks/results/quality_<dataset>.json
and .md.

    python benchmarks/bench_quality.py --data-root ../shared/data \\
        [--datasets beauty,sports,yelp] [--models sasrec_full] [--seeds 0,1,2]

``--keep --add-seeds --seeds 1,2`` adds seeds to the rows already in the results file (each
run keeps its own seed, config, commit and wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from mirec.config import load
from mirec.data.loaders import load_dataset
from mirec.evaluate import evaluate_scorer
from mirec.models.baselines import ItemKNN, Popularity
from mirec.tables import format_table
from mirec.training import peak_rss_mb, prepare, read_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROTOCOL_B_COLS = ["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20"]
PROTOCOL_A_COLS = ["recall@20", "recall@50", "hr@20", "hr@50", "ndcg@20", "ndcg@50"]
# name -> (folder, config prefix, metric columns). Sports and Yelp run the Beauty configs
# unchanged: their settings are chosen on Beauty validation only.
DATASETS = {
    "beauty": ("Beauty", "beauty", PROTOCOL_B_COLS),
    "sports": ("Sports_and_Outdoors", "beauty", PROTOCOL_B_COLS),
    "yelp": ("Yelp", "beauty", PROTOCOL_B_COLS),
    "ml-100k": ("ml-100k", "ml100k", PROTOCOL_A_COLS),
    # Yelp with the ComiRec user split (protocol A): the ml-100k configs run unchanged.
    "yelp-a": ("Yelp", "ml100k", PROTOCOL_A_COLS),
}
# Models trained by default per dataset; each is configs/<prefix>_<model>.yaml.
# sasrec_attr: SASRec whose item tower adds the items' attribute embeddings (brand, categories).
# sasrec_full(_attr): the plain recipe (full softmax, one row per prefix), ids (+ attributes).
# mimt_full: the multi-tower multi-interest model with repel on that recipe (seed 000); Sports
# and Yelp run the Beauty-chosen configs unchanged.
MODELS = {
    "beauty": ("mimt_full", "sasrec_full_attr", "sasrec_full", "sasrec", "sasrec_attr"),
    "sports": ("mimt_full", "sasrec_full_attr"),
    "yelp": ("mimt_full", "sasrec_full_attr"),
    "ml-100k": ("sasrec", "comirec_sa", "comirec_dr", "mind", "mimt", "remi", "elcrec"),
    "yelp-a": ("sasrec", "comirec_sa", "comirec_dr", "mind", "mimt", "remi"),
}
# Published full-ranking anchors on the same files and protocol (shared ANCHORS.md sections 0
# and 1, test; history scored 0 as in the reference code): HR@5, HR@20, NDCG@5, NDCG@20, and
# where each number was read.
ANCHORS: dict[str, dict[str, tuple[float, float, float, float, str]]] = {
    "beauty": {
        "PopRec": (0.0080, 0.0217, 0.0044, 0.0084, "S3-Rec repo"),
        "SASRec": (0.0374, 0.0901, 0.0241, 0.0387, "ELCRec Table 1"),
        "ICLRec": (0.0500, 0.1058, 0.0326, 0.0483, "released checkpoint"),
        "ELCRec (NeurIPS'24)": (0.0529, 0.1079, 0.0355, 0.0509, "ELCRec Table 1"),
        "DuoRec": (0.0561, 0.1228, 0.0348, 0.0536, "ICSRec performances.md"),
        "ICSRec (WSDM'24)": (0.0698, 0.1298, 0.0494, 0.0663, "ICSRec performances.md"),
        "BSARec (AAAI'24)": (0.0736, 0.1373, 0.0523, 0.0703, "BSARec src/output log"),
        "TV-Rec (NeurIPS'25)": (0.0721, 0.1403, 0.0513, 0.0705, "TV-Rec output log"),
        "WEARec (AAAI'26)": (0.0738, 0.1391, 0.0516, 0.0703, "WEARec src/output logs"),
    },
    "sports": {
        "SASRec": (0.0206, 0.0497, 0.0135, 0.0216, "ELCRec Table 1"),
        "ELCRec (NeurIPS'24)": (0.0286, 0.0648, 0.0185, 0.0286, "ELCRec Table 1"),
        "ICSRec (WSDM'24)": (0.0403, 0.0794, 0.0283, 0.0393, "ICSRec performances.md"),
        "TV-Rec (NeurIPS'25)": (0.0431, 0.0880, 0.0298, 0.0425, "TV-Rec output log"),
        "WEARec (AAAI'26)": (0.0433, 0.0895, 0.0302, 0.0433, "WEARec src/output log"),
    },
    "yelp": {
        "SASRec": (0.0160, 0.0443, 0.0101, 0.0179, "ELCRec Table 1"),
        "ICLRec": (0.0233, 0.0645, 0.0146, 0.0261, "ELCRec Table 1"),
        "ELCRec (NeurIPS'24)": (0.0236, 0.0653, 0.0150, 0.0266, "ELCRec Table 1"),
    },
}


def git_commit() -> str:
    """The checkout's commit (``+dirty`` when tracked files differ from it)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def train_model(
    ds_key: str,
    prefix: str,
    data_path: Path,
    model: str,
    out_root: Path,
    seed: int,
    threads: int | None = None,
    overrides: tuple[str, ...] = (),
) -> dict:
    """Train configs/<prefix>_<model>.yaml in a subprocess with ``seed`` (and ``threads`` torch
    threads, when given, in place of the config's); return its result.json payload."""
    config = ROOT / "configs" / f"{prefix}_{model}.yaml"
    out = out_root / ds_key / f"{model}_s{seed}"
    return train_run(config, data_path, out, seed, threads, overrides)


def train_run(
    config: Path,
    data_path: Path,
    out: Path,
    seed: int,
    threads: int | None = None,
    overrides: tuple[str, ...] = (),
) -> dict:
    """Train ``config`` (with ``key=value`` ``overrides``) in its own ``mirec train`` process
    into ``out``; return its metrics, timings, last-epoch ``diag/*`` values and provenance."""
    cmd = [sys.executable, "-m", "mirec.cli", "train", "--config", str(config)]
    cmd += ["--data", str(data_path), "--out", str(out), "--no-progress", f"seed={seed}"]
    if threads is not None:
        cmd.append(f"optim.num_threads={threads}")
    cmd += list(overrides)
    if (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    for stale in ("checkpoint.pt", "result.json"):
        (out / stale).unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    res = read_result(out / "result.json")
    last = res.history[-1] if res.history else {}
    return {
        "metrics": res.metrics,
        "train_seconds": res.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "examples_per_second": res.examples_per_second,
        "peak_rss_mb": res.peak_rss_mb,
        "best_epoch": res.best_epoch,
        "epochs": len(res.history),
        "diagnostics": {k: v for k, v in last.items() if k.startswith("diag/")},
        "seed": seed,
        "config": str(config.relative_to(ROOT)),
        "overrides": list(overrides),
        "commit": git_commit(),
        "torch_threads": threads,
    }


NUMERIC_FIELDS = ("train_seconds", "wall_seconds", "examples_per_second", "peak_rss_mb")


def over_seeds(runs: list[dict]) -> dict:
    """One row from per-seed runs: mean metrics, their std (population) and the runs."""
    keys = sorted(set.intersection(*(set(r["metrics"]) for r in runs)))
    mean = {k: float(np.mean([r["metrics"][k] for r in runs])) for k in keys}
    std = {k: float(np.std([r["metrics"][k] for r in runs])) for k in keys}
    row = {k: float(np.mean([r[k] for r in runs])) for k in NUMERIC_FIELDS}
    return {**row, "metrics": mean, "std": std, "seeds": [r["seed"] for r in runs], "runs": runs}


def floors(ds_key: str, prefix: str, data_path: Path) -> dict[str, dict]:
    """Popularity and ItemKNN on the same split as the neural models."""
    cfg = load(ROOT / "configs" / f"{prefix}_sasrec.yaml")
    prep = prepare(cfg, load_dataset(str(data_path)))
    split = prep.split
    out = {}
    for name, build in (
        ("Popularity", lambda: Popularity(split.item_counts)),
        ("ItemKNN", lambda: ItemKNN.fit(split.train.sequences, split.num_items)),
    ):
        started = time.perf_counter()
        scorer = build()
        fit_s = time.perf_counter() - started
        test = evaluate_scorer(scorer, split.test, cfg.eval, split.max_len)
        ref = evaluate_scorer(
            scorer, split.test, cfg.eval.model_copy(update={"history_score": "zero"}), split.max_len
        )
        metrics = {
            **{f"test/{k}": v for k, v in test.items()},
            **{f"test_ref/{k}": v for k, v in ref.items()},
        }
        out[name] = {
            "metrics": metrics,
            "train_seconds": fit_s,
            "wall_seconds": time.perf_counter() - started,
            "examples_per_second": 0.0,
            "peak_rss_mb": peak_rss_mb(),
            "best_epoch": -1,
            "epochs": 0,
        }
    return out


def _cell(r: dict, key: str) -> str:
    """``mean`` or ``mean ± std`` (rows over several seeds) of one metric."""
    value = r["metrics"].get(key, float("nan"))
    std = r.get("std", {}).get(key)
    return f"{value:.4f}" if std is None else f"{value:.4f} ± {std:.4f}"


# last-epoch diagnostics of the multi-interest models (mirec.objectives.epoch_hooks) -> column
DIAG_KEYS = {
    "interest_cosine": "interest cos",
    "routing_entropy_ratio": "routing H ratio",
    "routing_max_weight": "routing max w",
}


def diag_cell(r: dict, key: str) -> str:
    """A last-epoch diagnostic, averaged over a row's seeds (``-`` where none was logged)."""
    values = [run.get("diagnostics", {}).get(f"diag/{key}") for run in r.get("runs", [r])]
    found = [v for v in values if v is not None]
    return f"{float(np.mean(found)):.2f}" if found else "-"


def render(ds_key: str, results: dict[str, dict]) -> str:
    """The markdown report of one dataset."""
    cols = DATASETS[ds_key][2]
    head = ["model", *cols, "seeds", "train s", "wall s", "ex/s", "peak MiB"]
    diags = [k for k in DIAG_KEYS if any(diag_cell(r, k) != "-" for r in results.values())]
    head[len(cols) + 1 : len(cols) + 1] = [DIAG_KEYS[k] for k in diags]
    rows = [
        [
            name,
            *[_cell(r, "test/" + c) for c in cols],
            *[diag_cell(r, k) for k in diags],
            ",".join(map(str, r.get("seeds", [r.get("seed", "-")]))),
            f"{r['train_seconds']:.0f}",
            f"{r['wall_seconds']:.0f}",
            f"{r['examples_per_second']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
        ]
        for name, r in results.items()
    ]
    text = [
        f"## {ds_key}: test, full ranking, history excluded (-inf)",
        "",
        format_table(head, rows),
    ]
    if ds_key in ANCHORS:
        acols = ["hr@5", "hr@20", "ndcg@5", "ndcg@20"]
        arows = [
            [f"{n} (ours, 0-score)", *[_cell(r, "test_ref/" + c) for c in acols], "this run"]
            for n, r in results.items()
        ]
        arows += [
            [n, *[f"{v:.4f}" for v in vals[:4]], vals[4]] for n, vals in ANCHORS[ds_key].items()
        ]
        text += [
            "",
            "### beside published anchors (same files, same protocol: history scored 0)",
            "",
            format_table(["model", *acols, "source"], arows),
        ]
    return "\n".join(text)


def train_jobs(
    jobs: list[tuple[str, int]],
    ds_key: str,
    data_path: Path,
    args: argparse.Namespace,
    overrides: tuple[str, ...],
) -> list[dict]:
    """Train every (model, seed) of ``jobs``, ``args.jobs`` at a time; results in job order."""
    prefix = DATASETS[ds_key][1]

    def run(job: tuple[str, int]) -> dict:
        model, seed = job
        out = Path(args.out)
        return train_model(ds_key, prefix, data_path, model, out, seed, args.threads, overrides)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(run, jobs))


def cpu_model() -> str:
    """The CPU's model name (speeds differ between machines of the same core count)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def row_runs(row: dict) -> list[dict]:
    """The per-seed runs of a results row (a one-seed row is its own run)."""
    return list(row["runs"]) if "runs" in row else [row]


def with_more_seeds(old: dict | None, new: list[dict]) -> dict:
    """A row over ``old``'s runs and the ``new`` ones; a new run replaces an old one's seed."""
    fresh = {r["seed"] for r in new}
    kept = [r for r in row_runs(old) if r.get("seed") not in fresh] if old else []
    runs = sorted(kept + new, key=lambda r: r["seed"])
    return over_seeds(runs) if len(runs) > 1 else runs[0]


def _previous(ds_key: str) -> dict[str, dict]:
    path = RESULTS / f"quality_{ds_key}.json"
    return json.loads(path.read_text())["results"] if path.exists() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", default=os.environ.get("MIREC_SHARED_DATA", "../shared/data")
    )
    parser.add_argument("--datasets", default="beauty,ml-100k")
    parser.add_argument(
        "--models", default=None, help="comma-separated models (default: each dataset's list)"
    )
    parser.add_argument("--out", default="runs/bench_quality", help="training run directories")
    parser.add_argument("--keep", action="store_true", help="merge into the existing results file")
    parser.add_argument(
        "--add-seeds",
        action="store_true",
        help="with --keep: add these seeds' runs to a model's row instead of replacing the row",
    )
    parser.add_argument("--no-floors", action="store_true", help="skip popularity and ItemKNN")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds per model (mean ± std)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: the config's)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training budget of every model (default: its config's)",
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for ds_key in args.datasets.split(","):
        folder, prefix, _ = DATASETS[ds_key]
        data_path = Path(args.data_root) / folder
        results = _previous(ds_key) if args.keep else {}
        if not args.no_floors:
            results.update(floors(ds_key, prefix, data_path))
        models = args.models.split(",") if args.models is not None else MODELS[ds_key]
        seeds = [int(x) for x in args.seeds.split(",") if x]
        jobs = [(m, seed) for m in models if m for seed in seeds]
        budget = () if args.minutes is None else (f"optim.max_minutes={args.minutes}",)

        done = train_jobs(jobs, ds_key, data_path, args, budget)
        for model in dict.fromkeys(m for m, _ in jobs):
            runs = [r for (m, _), r in zip(jobs, done, strict=True) if m == model]
            previous = results.get(model) if args.add_seeds else None
            results[model] = with_more_seeds(previous, runs)
        report = render(ds_key, results)
        print(report, flush=True)
        meta = {
            "dataset": ds_key,
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, {cpu_model()}",
            "torch_threads": torch.get_num_threads(),
            "results": results,
        }
        (RESULTS / f"quality_{ds_key}.json").write_text(json.dumps(meta, indent=2))
        (RESULTS / f"quality_{ds_key}.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
