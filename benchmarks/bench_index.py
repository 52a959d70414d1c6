"""faiss index benchmark: build time, memory, query latency and recall@50 of the merged list.

For each catalogue size (default 10^5 and 10^6 items, D=64) and each synthetic set, builds the
indexes ``mirec.index`` can choose (exact flat, HNSW32 at a few efSearch, IVF at a few nprobe)
and measures, with 2 faiss threads:

* build seconds, index file size and resident-memory growth of the process;
* latency of one query = one user's K=4 interest vectors through ``search_interests`` (one faiss
  search + merge by max), asked one user at a time (p50 / p95) and as one batch (per user);
* recall@50 of the merged list against exact search over the same users.

Sets (items and users drawn the same way, every vector L2-normalised, inner product):

* ``clustered``: 2000 centres ~ N(0, I_D), vector = centre + 0.5 * N(0, I_D) (cosine to its
  centre about 0.89; at 10^6 items a centre holds 500 items, so a top-50 stays in one cluster);
* ``weak``: one centre per 50 items (2000 at 10^5, 20000 at 10^6), vector = centre + 1.0 *
  N(0, I_D) (cosine to its centre about 0.71, and a top-50 spills over several clusters at
  every size: weakly clustered, harder for IVF).

Single-query latency is the best of ``ROUNDS`` medians over the users (the machine is shared;
a descheduled OpenMP thread adds whole time slices to a query); it is also measured with one
faiss thread, which does not wait on a second core.

Writes ``benchmarks/results/index.json`` and ``index.md``. Example::

    python benchmarks/bench_index.py --sizes 100000 --users 200
    python benchmarks/bench_index.py --sizes 1000000 --sets weak --merge  # redo one group
    python benchmarks/bench_index.py --render  # rewrite index.md from index.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mirec.config import IndexConfig
from mirec.index import (
    HNSW_EF_CONSTRUCTION,
    build_index,
    choose_kind,
    default_nlist,
    merged_recall,
    search_interests,
    set_search_params,
)

CENTRES = 2000  # clustered set
ITEMS_PER_CENTRE = 50  # weak set: centres grow with the catalogue
NOISE = {"clustered": 0.5, "weak": 1.0}
EF_SEARCH = (32, 64, 128, 256)
NPROBE = (8, 16, 32, 64, 128)
ROUNDS = 3
TARGET_RECALL, TARGET_MS = 0.98, 0.5
RESULTS = Path(__file__).resolve().parent / "results"


def make_set(
    name: str, num_items: int, num_users: int, dim: int, interests: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Items [N, D] and users [U, K, D] for one synthetic set (see the module docstring)."""
    rng = np.random.default_rng(seed)
    num_centres = CENTRES if name == "clustered" else max(1, num_items // ITEMS_PER_CENTRE)
    centres = rng.standard_normal((num_centres, dim)).astype(np.float32)
    noise = np.float32(NOISE[name])

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        vecs = centres[rng.integers(num_centres, size=shape)]
        vecs += noise * rng.standard_normal((*shape, dim), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=-1, keepdims=True)
        return vecs

    return draw((num_items,)), draw((num_users, interests))


def rss_mb() -> float:
    """Resident memory of this process in MiB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def file_mb(index: faiss.Index) -> float:
    """Size of the serialised index in MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path) / 2**20


def single_latency(index: faiss.Index, users: np.ndarray, k: int) -> tuple[float, float]:
    """p50 and p95 seconds of one user's query, best of ``ROUNDS`` passes over the users."""
    rounds = []
    for _ in range(ROUNDS):
        times = []
        for row in range(users.shape[0]):
            start = time.perf_counter()
            search_interests(index, users[row : row + 1], k)
            times.append(time.perf_counter() - start)
        rounds.append((float(np.median(times)), float(np.percentile(times, 95))))
    return min(rounds)


def latency(
    index: faiss.Index, users: np.ndarray, k: int, threads: int, latency_users: int
) -> dict[str, float]:
    """Per-user latency in ms: one user at a time (p50, p95; also with 1 thread) and batched."""
    search_interests(index, users[:8], k)  # warm-up
    p50, p95 = single_latency(index, users[:latency_users], k)
    faiss.omp_set_num_threads(1)
    p50_one_thread, _ = single_latency(index, users[:latency_users], k)
    faiss.omp_set_num_threads(threads)
    start = time.perf_counter()
    search_interests(index, users, k)
    batch = (time.perf_counter() - start) / users.shape[0]
    return {
        "single_ms_p50": round(1e3 * p50, 4),
        "single_ms_p95": round(1e3 * p95, 4),
        "single_ms_p50_1thread": round(1e3 * p50_one_thread, 4),
        "batch_ms_per_user": round(1e3 * batch, 4),
    }


def build(kind: str, items: np.ndarray, ids: np.ndarray, m: int) -> tuple[Any, dict[str, Any]]:
    """Build one index through ``mirec.index.build_index`` (no recall gate here)."""
    cfg = IndexConfig(kind=kind, hnsw_m=m)
    before = rss_mb()
    index, info = build_index(items, ids, cfg)
    return index, {
        "build_s": round(info.build_seconds, 2),
        "index_mb": round(file_mb(index), 1),
        "rss_delta_mb": round(rss_mb() - before, 1),
        "params": info.params,
    }


def sweep(kind: str) -> list[dict[str, int]]:
    """The search-time settings measured for one index kind."""
    if kind == "hnsw":
        return [{"ef_search": ef} for ef in EF_SEARCH]
    if kind == "ivf":
        return [{"nprobe": nprobe} for nprobe in NPROBE]
    return [{}]


def bench_set(name: str, num_items: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """All indexes on one (set, size); returns one row per (index, search setting)."""
    items, users = make_set(name, num_items, args.users, args.dim, args.interests, args.seed)
    ids = np.arange(1, num_items + 1, dtype=np.int64)
    rows: list[dict[str, Any]] = []
    exact_ids = None
    for kind in ("flat", "hnsw", "ivf"):
        index, built = build(kind, items, ids, args.hnsw_m)
        if exact_ids is None:
            exact_ids = search_interests(index, users, args.k)[0]  # the flat index: truth
        for setting in sweep(kind):
            set_search_params(index, **setting)
            recall = merged_recall(search_interests(index, users, args.k)[0], exact_ids)
            row = {
                "set": name,
                "num_items": num_items,
                "dim": args.dim,
                "index": kind,
                **built,
                "params": {**built["params"], **setting},
                f"recall@{args.k}": round(recall, 4),
                **latency(index, users, args.k, args.threads, args.latency_users),
            }
            rows.append(row)
            print(format_row(row, args.k), flush=True)
        del index
    return rows


def label(row: dict[str, Any]) -> str:
    """Short name of an index setting, e.g. HNSW32 ef64 or IVF4096 np16."""
    params = row["params"]
    if row["index"] == "hnsw":
        return f"HNSW{params['m']} ef{params['ef_search']}"
    if row["index"] == "ivf":
        return f"IVF{params['nlist']} np{params['nprobe']}"
    return "exact (IDMap2 FlatIP)"


HEADER = (
    "| set | items | index | build s | index MiB | RSS +MiB | single p50 ms | single p95 ms "
    "| single p50 ms, 1 thread | batch ms/user | recall@{k} |"
)


def format_row(row: dict[str, Any], k: int) -> str:
    """One markdown table row."""
    return (
        f"| {row['set']} | {row['num_items']:,} | {label(row)} | {row['build_s']:.1f} "
        f"| {row['index_mb']:.0f} | {row['rss_delta_mb']:.0f} | {row['single_ms_p50']:.3f} "
        f"| {row['single_ms_p95']:.3f} | {row['single_ms_p50_1thread']:.3f} "
        f"| {row['batch_ms_per_user']:.3f} "
        f"| {row[f'recall@{k}']:.3f} |"
    )


def fastest(rows: list[dict[str, Any]], k: int, column: str) -> dict[str, Any] | None:
    """The ANN setting with recall@k >= the target recall that is fastest by ``column``."""
    ok = [r for r in rows if r[f"recall@{k}"] >= TARGET_RECALL and r["index"] != "flat"]
    return min(ok, key=lambda r: r[column]) if ok else None


def verdicts(rows: list[dict[str, Any]], k: int) -> list[str]:
    """One line per (set, size): the fastest ANN setting that reaches the target recall."""
    lines = []
    for name in dict.fromkeys(r["set"] for r in rows):
        for size in sorted({r["num_items"] for r in rows if r["set"] == name}):
            group = [r for r in rows if r["set"] == name and r["num_items"] == size]
            head = (
                f"- {name}, {size:,} items (`kind=auto` builds {choose_kind(size, IndexConfig())})"
            )
            parts = []
            for column, what in (
                ("single_ms_p50", "2 threads"),
                ("single_ms_p50_1thread", "1 thread"),
            ):
                best = fastest(group, k, column)
                if best is not None:
                    met = "meets" if best[column] < TARGET_MS else "misses"
                    parts.append(
                        f"with {what} {label(best)}, recall {best[f'recall@{k}']:.3f} at "
                        f"{best[column]:.3f} ms ({met} < {TARGET_MS} ms)"
                    )
            if not parts:
                lines.append(f"{head}: no ANN setting reaches recall@{k} {TARGET_RECALL}")
            else:
                lines.append(
                    f"{head}: fastest with recall@{k} >= {TARGET_RECALL}: " + "; ".join(parts)
                )
    return lines


def make_meta(args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """What the numbers were measured with."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "faiss_threads": args.threads,
        "dim": args.dim,
        "users": args.users,
        "latency_users": args.latency_users,
        "latency_rounds": ROUNDS,
        "load_average_start": args.load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "interests": args.interests,
        "k": args.k,
        "hnsw_ef_construction": HNSW_EF_CONSTRUCTION,
        "ivf_nlist": {str(n): default_nlist(n) for n in args.sizes},
        "sets": {
            "clustered": f"{CENTRES} centres, noise {NOISE['clustered']}, L2-normalised",
            "weak": f"one centre per {ITEMS_PER_CENTRE} items, noise {NOISE['weak']}, "
            "L2-normalised",
        },
        "total_seconds": round(seconds, 1),
    }


def write_markdown(meta: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> None:
    """Write index.md: setup, table, verdicts."""
    k, dim = meta["k"], meta.get("dim", rows[0]["dim"] if rows else None)
    table = [HEADER.format(k=k), "|" + "---|" * 11] + [format_row(r, k) for r in rows]
    text = [
        "# faiss index benchmark (`make bench-index`)",
        "",
        f"{meta['date']}, faiss {meta['faiss']}, {meta['faiss_threads']} faiss threads on a "
        f"{meta['cpu_count']}-core machine, D={dim}, {meta['users']} users x "
        f"K={meta['interests']} interest vectors, top-{k} per vector merged by max score "
        "(`search_interests`). Latency includes the merge. Sets: "
        + "; ".join(f"`{n}` {d}" for n, d in meta["sets"].items())
        + f". HNSW efConstruction {meta['hnsw_ef_construction']}; IVF trained on 50 points per "
        f"list. Recall over all {meta['users']} users; single-query latency over the first "
        f"{meta['latency_users']}, best of {meta['latency_rounds']} passes. The machine is "
        "shared (load averages below); with 2 threads a query waits whenever the second core "
        "is busy, hence the 1-thread column.",
        "",
        *[
            f"- run {run['date']} ({run['total_seconds']:.0f} s, load average "
            f"{run['load_average_start']} -> {run['load_average_end']}): "
            + ", ".join(run["measured"])
            for run in meta.get("runs")
            or [run_summary(meta, [{**r, "run": meta["date"]} for r in rows])]
        ],
        "",
        *table,
        "",
        f"Target: recall@{k} >= {TARGET_RECALL} at < {TARGET_MS} ms per user, 10^6 clustered.",
        "",
        *verdicts(rows, k),
        "",
    ]
    (out / "index.md").write_text("\n".join(text))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="catalogue sizes"
    )
    parser.add_argument(
        "--sets", nargs="+", default=list(NOISE), choices=list(NOISE), help="synthetic sets"
    )
    parser.add_argument("--dim", type=int, default=64, help="vector dimension D")
    parser.add_argument("--users", type=int, default=500, help="users (queries) per measurement")
    parser.add_argument(
        "--latency-users", type=int, default=100, help="users asked one at a time for latency"
    )
    parser.add_argument("--interests", type=int, default=4, help="K, interest vectors per user")
    parser.add_argument("--k", type=int, default=50, help="results per user (recall@k)")
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node")
    parser.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite index.md from index.json"
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep earlier results of the sets/sizes not rerun"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write the results."""
    args = parse_args(argv)
    if args.render:
        saved = json.loads((args.out / "index.json").read_text())
        write_markdown(saved["meta"], saved["rows"], args.out)
        return
    args.load_start = [round(x, 2) for x in os.getloadavg()]
    logging.getLogger("mirec.index").setLevel(logging.ERROR)  # "recall not gated": on purpose
    faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    print(HEADER.format(k=args.k), flush=True)
    rows = [row for size in args.sizes for name in args.sets for row in bench_set(name, size, args)]
    meta = make_meta(args, time.perf_counter() - start)
    for row in rows:
        row["run"] = meta["date"]
    if args.merge and (args.out / "index.json").is_file():
        meta, rows = merge_runs(json.loads((args.out / "index.json").read_text()), meta, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "index.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    write_markdown(meta, rows, args.out)
    print("\n".join(verdicts(rows, args.k)))
    print(f"wrote {args.out / 'index.json'} and {args.out / 'index.md'}")


def run_summary(meta: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """When one run happened, under which load, and what it measured."""
    return {
        "date": meta["date"],
        "load_average_start": meta["load_average_start"],
        "load_average_end": meta["load_average_end"],
        "total_seconds": meta["total_seconds"],
        "measured": sorted(
            {f"{r['set']} {r['num_items']}" for r in rows if r["run"] == meta["date"]}
        ),
    }


def merge_runs(
    old: dict[str, Any], meta: dict[str, Any], rows: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Replace the (set, size) groups just measured in earlier results; keep the others."""
    for row in old["rows"]:
        row.setdefault("run", old["meta"]["date"])
    fresh = {(r["set"], r["num_items"]) for r in rows}
    kept = [r for r in old["rows"] if (r["set"], r["num_items"]) not in fresh]
    merged = sorted(kept + rows, key=lambda r: (r["num_items"], list(NOISE).index(r["set"])))
    earlier = old["meta"].get("runs") or [run_summary(old["meta"], old["rows"])]
    still = {f"{r['set']} {r['num_items']}" for r in kept}
    runs = [
        {**run, "measured": [m for m in run["measured"] if m in still]}
        for run in earlier
        if any(r["run"] == run["date"] for r in kept)
    ]
    return {**meta, "runs": [*runs, run_summary(meta, rows)]}, merged


if __name__ == "__main__":
    main()
