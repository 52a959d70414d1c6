"""Quality benchmark: baselines and non-neural floors on real data, beside published anchors.

Beauty (S3-Rec files, protocol B leave-one-out, full ranking) and ml-100k (RecBole files,
protocol A ComiRec user split). Each neural model trains in its own process (``mirec train``)
so its wall time and peak memory are its own. Writes benchmarks/results/quality_<dataset>.json
and .md.

    python benchmarks/bench_quality.py --data-root ../shared/data \\
        [--datasets beauty] [--models sasrec]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from mirec.config import load
from mirec.data.loaders import load_dataset
from mirec.evaluate import evaluate_scorer
from mirec.models.baselines import ItemKNN, Popularity
from mirec.tables import format_table
from mirec.training import peak_rss_mb, prepare, read_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = {  # name -> (folder, config prefix, metric columns)
    "beauty": ("Beauty", "beauty", ["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20"]),
    "ml-100k": (
        "ml-100k",
        "ml100k",
        ["recall@20", "recall@50", "hr@20", "hr@50", "ndcg@20", "ndcg@50"],
    ),
}
# Models trained by default per dataset; each is configs/<prefix>_<model>.yaml.
# sasrec_attr: SASRec whose item tower adds the items' attribute embeddings (brand, categories).
MODELS = {
    "beauty": ("sasrec", "sasrec_attr"),
    "ml-100k": ("sasrec", "comirec_sa", "comirec_dr", "mind"),
}
# Published full-ranking anchors on the same Beauty files and protocol (shared ANCHORS.md §1,
# test; history scored 0 as in the reference code): HR@5, HR@20, NDCG@5, NDCG@20.
BEAUTY_ANCHORS = {
    "PopRec (S3-Rec repo)": (0.0080, 0.0217, 0.0044, 0.0084),
    "SASRec (ELCRec Table 1)": (0.0374, 0.0901, 0.0241, 0.0387),
    "ICLRec (checkpoint)": (0.0500, 0.1058, 0.0326, 0.0483),
    "ELCRec (NeurIPS'24)": (0.0529, 0.1079, 0.0355, 0.0509),
    "DuoRec (ICSRec table)": (0.0561, 0.1228, 0.0348, 0.0536),
    "ICSRec (WSDM'24)": (0.0698, 0.1298, 0.0494, 0.0663),
}


def train_model(ds_key: str, prefix: str, data_path: Path, model: str, out_root: Path) -> dict:
    """Train one model in a subprocess; return its result.json payload."""
    out = out_root / ds_key / model
    cmd = [
        sys.executable,
        "-m",
        "mirec.cli",
        "train",
        "--config",
        str(ROOT / "configs" / f"{prefix}_{model}.yaml"),
        "--data",
        str(data_path),
        "--out",
        str(out),
        "--no-progress",
    ]
    if (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    for stale in ("checkpoint.pt", "result.json"):
        (out / stale).unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    res = read_result(out / "result.json")
    return {
        "metrics": res.metrics,
        "train_seconds": res.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "examples_per_second": res.examples_per_second,
        "peak_rss_mb": res.peak_rss_mb,
        "best_epoch": res.best_epoch,
        "epochs": len(res.history),
    }


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


def render(ds_key: str, results: dict[str, dict]) -> str:
    """The markdown report of one dataset."""
    cols = DATASETS[ds_key][2]
    head = ["model", *cols, "train s", "wall s", "ex/s", "peak MiB"]
    rows = [
        [
            name,
            *[f"{r['metrics'].get('test/' + c, float('nan')):.4f}" for c in cols],
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
    if ds_key == "beauty":
        acols = ["hr@5", "hr@20", "ndcg@5", "ndcg@20"]
        arows = [
            [
                f"{n} (ours, 0-score)",
                *[f"{r['metrics'].get('test_ref/' + c, float('nan')):.4f}" for c in acols],
            ]
            for n, r in results.items()
        ]
        arows += [[n, *[f"{v:.4f}" for v in vals]] for n, vals in BEAUTY_ANCHORS.items()]
        text += [
            "",
            "### beside published anchors (same files, same protocol: history scored 0)",
            "",
            format_table(["model", *acols], arows),
        ]
    return "\n".join(text)


def cpu_model() -> str:
    """The CPU's model name (speeds differ between machines of the same core count)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


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
    parser.add_argument("--no-floors", action="store_true", help="skip popularity and ItemKNN")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for ds_key in args.datasets.split(","):
        folder, prefix, _ = DATASETS[ds_key]
        data_path = Path(args.data_root) / folder
        results = _previous(ds_key) if args.keep else {}
        if not args.no_floors:
            results.update(floors(ds_key, prefix, data_path))
        models = args.models.split(",") if args.models is not None else MODELS[ds_key]
        for model in [m for m in models if m]:
            results[model] = train_model(ds_key, prefix, data_path, model, Path(args.out))
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
