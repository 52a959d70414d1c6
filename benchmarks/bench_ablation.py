"""Ablation of the seed methods on Beauty (protocol B): one term added per row, same budget.

Every row trains configs/beauty_mimt_full.yaml with the overrides in ``ROWS`` (cumulative: each
row is the previous one plus one term), so the rows differ only in what they name. The SASRec row
and the two floors are read from benchmarks/results/quality_beauty.json (same split, recipe and
budget, ``make bench-quality``). Rows run ``--jobs`` at a time, each with ``--threads`` torch
threads; the defaults (2 jobs x 1 thread) are the conditions of the SASRec rows there.
Writes benchmarks/results/ablation_beauty.{json,md}.

    python benchmarks/bench_ablation.py --data-root ../shared/data [--rows head,max] \\
        [--seeds 0,1,2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_quality import RESULTS, ROOT, cpu_model, diag_cell, over_seeds, train_run

from mirec.tables import format_table

CONFIG = ROOT / "configs" / "beauty_mimt_full.yaml"
log = logging.getLogger("bench_ablation")
OFF = ("loss.auxiliary.repel=0",)
IHN = ("loss.kind=full_softmax_ihn", "loss.ihn_beta=1.0")
RR = (*IHN, "loss.auxiliary.routing=1000")
CLUSTERING = (*RR, "model.num_intents=32", "loss.auxiliary.clustering=1.0")
# key -> (row label, overrides of CONFIG); each row adds one term to the row before it.
ROWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "base": ("base: item tower + 2 bidirectional blocks, K = 1", ("model.num_interests=1", *OFF)),
    "head": (
        "+ multi-interest head (ComiRec-SA, K = 4, target-aware)",
        ("loss.readout=target_aware", *OFF),
    ),
    "max": ("+ max readout (as serving scores)", OFF),
    "repel": ("+ repel 0.1 (= beauty_mimt_full)", ()),
    "ihn": ("+ IHN (full-catalogue tilt, beta 1)", IHN),
    "rr": ("+ RR (routing 1,000)", RR),
    "clustering": ("+ clustering (32 intents, weight 1)", CLUSTERING),
    "contrastive": ("+ contrastive (weight 0.1)", (*CLUSTERING, "loss.auxiliary.contrastive=0.1")),
}
REFERENCE_ROWS = {
    "Popularity": "Popularity",
    "ItemKNN": "ItemKNN",
    "SASRec ids + attributes": "sasrec_full_attr",
}
TEST_COLS = ("ndcg@5", "hr@20", "ndcg@10")
DIAG_COLS = ("interest_cosine", "routing_entropy_ratio", "routing_max_weight")


def reference_rows() -> dict[str, dict]:
    """SASRec and the floors from the quality benchmark's Beauty results (empty if absent)."""
    path = RESULTS / "quality_beauty.json"
    if not path.exists():
        return {}
    results = json.loads(path.read_text())["results"]
    return {label: results[key] for label, key in REFERENCE_ROWS.items() if key in results}


def _metric(r: dict, key: str) -> str:
    value = r["metrics"].get(key)
    if value is None:
        return "-"
    std = r.get("std", {}).get(key)
    return f"{value:.4f}" if std is None else f"{value:.4f} ± {std:.4f}"


def render(rows: dict[str, dict], refs: dict[str, dict]) -> str:
    """The markdown ablation table: trained rows, then SASRec and the floors."""
    sasrec = refs.get("SASRec ids + attributes", {}).get("metrics", {})
    head = ["row", "valid ndcg@10", *[f"test {c}" for c in TEST_COLS], "vs SASRec ndcg@5"]
    head += [*DIAG_COLS, "seeds", "epochs", "train s", "ex/s"]
    lines = []
    for label, r in [*rows.items(), *refs.items()]:
        ref = sasrec.get("test/ndcg@5")
        gain = "-" if not ref or label in refs else f"{r['metrics']['test/ndcg@5'] / ref - 1:+.1%}"
        runs = r.get("runs", [r])
        lines.append(
            [
                label,
                _metric(r, "valid/ndcg@10"),
                *[_metric(r, "test/" + c) for c in TEST_COLS],
                gain,
                *[diag_cell(r, k) for k in DIAG_COLS],
                ",".join(str(x.get("seed", "-")) for x in runs),
                ",".join(str(x.get("epochs", "-")) for x in runs),
                f"{r['train_seconds']:.0f}",
                f"{r['examples_per_second']:.0f}",
            ]
        )
    return "\n".join(
        [
            "## Beauty ablation: test, full ranking, history excluded; chosen on valid ndcg@10",
            "",
            format_table(head, lines),
            "",
            "Each trained row adds one term to the row above it (configs/beauty_mimt_full.yaml",
            "with the overrides recorded in the json); SASRec and the floors come from",
            "quality_beauty.json. 'vs SASRec' is the test ndcg@5 relative to SASRec's.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", default=os.environ.get("MIREC_SHARED_DATA", "../shared/data")
    )
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated of {list(ROWS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds per row (mean ± std)")
    parser.add_argument("--jobs", type=int, default=2, help="rows trained at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", default="runs/bench_ablation", help="training run directories")
    parser.add_argument("--keep", action="store_true", help="merge into the existing results")
    parser.add_argument(
        "--reuse", action="store_true", help="take runs already finished under --out as they are"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    keys = [k for k in args.rows.split(",") if k]
    unknown = sorted(set(keys) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {list(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    data = Path(args.data_root) / "Beauty"
    jobs = [(k, s) for k in keys for s in seeds]

    def run(job: tuple[str, int]) -> dict | None:
        key, seed = job
        out = Path(args.out) / f"{key}_s{seed}"
        record = out / "bench_run.json"
        if args.reuse and record.exists():
            log.info("%s seed %d: reusing %s", key, seed, record)
            return dict(json.loads(record.read_text()))
        try:
            done = train_run(CONFIG, data, out, seed, args.threads, ROWS[key][1])
        except subprocess.CalledProcessError as err:
            log.error("%s seed %d failed (exit %d); the row is left out", key, seed, err.returncode)
            return None
        record.write_text(json.dumps(done, indent=2))
        return done

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(run, jobs))
    path = RESULTS / "ablation_beauty.json"
    stored = json.loads(path.read_text())["rows"] if args.keep and path.exists() else {}
    for key in keys:
        runs = [r for (k, _), r in zip(jobs, done, strict=True) if k == key and r is not None]
        if runs:
            stored[key] = over_seeds(runs) if len(runs) > 1 else runs[0]
    ordered = {ROWS[k][0]: stored[k] for k in ROWS if k in stored}
    report = render(ordered, reference_rows())
    print(report, flush=True)
    meta = {
        "dataset": "beauty",
        "config": str(CONFIG.relative_to(ROOT)),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {cpu_model()}",
        "jobs": args.jobs,
        "torch_threads": args.threads,
        "rows": stored,
    }
    path.write_text(json.dumps(meta, indent=2))
    (RESULTS / "ablation_beauty.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
