"""Feature-pipeline benchmark: Spark build scaling, Feast online lookup latency, validation cost.

Synthetic event logs (``mirec.data.synthetic.write_synthetic_events``): user lengths are
1 + floor(4.25 * Lomax(1.5)) (a Pareto-II tail: mean ~9, median 3, p99 ~85, capped at 10^5
events), items max(1000, E/100) with Zipf(1.05) popularity, second-level timestamps. Each size is
built in its own process (``build_features``: vocabulary, user-history snapshots + "as of build"
rows, protocol-B training examples, item and user tables) and its wall time and peak RSS (Python +
Spark JVM) are recorded. Online lookups (one user, batches of 100) are timed in-process against
SQLite and Redis after ``apply`` + ``materialize`` of the smallest build. Results are merged into
benchmarks/results/features.json (sizes not re-run keep their earlier numbers) and .md.

    python benchmarks/bench_features.py                      # 1e5 1e6 1e7 1e8 (long!)
    python benchmarks/bench_features.py --sizes 1e5,1e6      # a quick check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from mirec.tables import format_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DISTRIBUTION = (
    "user lengths 1 + floor(4.25 * Lomax(1.5)) (mean ~9, median 3, p99 ~85, max 10^5); "
    "items max(1000, E/100), Zipf(1.05) popularity"
)
TARGETS_S = {10**7: 120.0, 10**8: 900.0}
TRAINING_SET_TARGETS_S = {2 * 10**5: 30.0, 10**7: 600.0}
WARMUP_CALLS = 200  # lookups before the timed ones
NOTES = """Notes
- build s: wall time of the build process (Python start, Spark JVM start, every stage);
  Spark stages s: the stages alone (vocabulary, user_sequences = the one shuffle grouping each
  user's events, cached; user_history = per-event snapshots + "as of build" rows, training
  examples, item and user tables). Peak RSS: Python + Spark JVM. Fixed costs, paid at every
  size (2 cores, load 2-4): Python imports ~1 s, Spark JVM start 8-9 s, and the JVM's first
  queries (class loading, code generation, JIT) 10-20 s more than the same stages once warm.
- Online lookups: in-process `OnlineFeatures.lookup`, after 200 warm-up calls and `gc.freeze()`
  (see `time_reader`); a load above 2 preempts calls and shows up in p99 first.
- load: 1-minute load average when the measurement ended; the 2 cores are shared, so a load
  above 2 means other jobs slowed this one down.
- Sizes that are not listed were not run here: `python benchmarks/bench_features.py --sizes
  1e7,1e8` (10^8 needs ~10 GB for events and outputs, about 90 MB per 10^6 events, plus
  Spark shuffle space, and a quiet machine)."""


def parse_size(text: str) -> int:
    """'1e6' or '1000000' -> 1000000."""
    return int(float(text))


class PeakRss:
    """Polls the summed RSS of a process and its children (the Spark JVM) in a thread."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.pid, self.every_s, self.peak = pid, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                proc = psutil.Process(self.pid)
                procs = [proc, *proc.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def child_build(args: argparse.Namespace) -> None:
    """Run inside the child process: one build, the manifest as JSON on the last stdout line."""
    from datetime import UTC, datetime

    from mirec.features.build import FeatureBuildConfig, build_features
    from mirec.features.checks import quarantine_validator, suite_checker

    start = time.perf_counter()
    now = datetime.now(UTC)
    hooks = {}
    if args.validate:
        root = Path(args.workdir)
        hooks["validate"] = quarantine_validator(root, now=now, max_bad_fraction=0.01)
        hooks["check_tables"] = suite_checker(root / "validation_docs", now=now)
    cfg = FeatureBuildConfig(master=args.master, driver_memory=args.driver_memory)
    result = build_features(args.child_build, args.workdir, cfg=cfg, now=now, **hooks)
    manifest = dict(result.manifest, wall_s=round(time.perf_counter() - start, 2))
    print(json.dumps(manifest))


def child_training_set(args: argparse.Namespace) -> None:
    """Run inside the child process: the pipeline's make-training-set step over one build.

    Renders and applies the Feast repository of the build (as the publish step does), then
    ``build_training_set`` (protocol B, default config): the point-in-time join over the
    ``user_tower_v1`` views, written as parquet and registered as a saved dataset.
    """
    from mirec.config import DataConfig
    from mirec.features import feast_io
    from mirec.features.repo import StoreSettings, render_repo
    from mirec.features.spark_session import get_spark
    from mirec.features.training_set import build_training_set

    start = time.perf_counter()
    root = Path(args.workdir)
    render_repo(root, StoreSettings(project=f"bench_{uuid.uuid4().hex[:8]}"))
    feast_io.apply(root)
    apply_s = time.perf_counter() - start
    spark = get_spark(args.master, driver_memory=args.driver_memory)
    spark_s = time.perf_counter() - start - apply_s
    result = build_training_set(
        root, args.child_training_set, root / "training_set", DataConfig(), spark=spark
    )
    print(
        json.dumps(
            {
                "rows": result.rows,
                "users": result.users,
                "empty_histories": result.empty_histories,
                "mean_hist_len": round(result.mean_hist_len, 2),
                "feast_apply_s": round(apply_s, 2),
                "spark_start_s": round(spark_s, 2),
                "join_write_s": result.seconds,
                "wall_s": round(time.perf_counter() - start, 2),
            }
        )
    )


def run_child(cmd: list[str], what: str) -> dict[str, Any]:
    """Run a child process; its last stdout line (JSON) + wall time, load and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRss(proc.pid) as rss:
        out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{err[-4000:]}")
    manifest = json.loads(out.strip().splitlines()[-1])
    manifest["process_wall_s"] = round(wall, 2)
    manifest["load_avg_1m"] = round(os.getloadavg()[0], 1)
    manifest["peak_rss_mb"] = round(rss.peak / 2**20)
    return manifest


def child_command(mode: str, events: Path, workdir: Path, args: argparse.Namespace) -> list[str]:
    """This script again as a child: ``mode`` (``--child-build`` / ``--child-training-set``)."""
    return [
        sys.executable,
        __file__,
        mode,
        str(events),
        "--workdir",
        str(workdir),
        "--master",
        args.master,
        "--driver-memory",
        args.driver_memory,
    ]


def run_training_set(events: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The training-set step over the build in ``workdir``, in its own process (own JVM)."""
    cmd = child_command("--child-training-set", events, workdir, args)
    step = run_child(cmd, f"training set of {events}")
    # `feast apply` belongs to the pipeline's publish step; the training-set step starts after it
    step["step_s"] = round(step["process_wall_s"] - step["feast_apply_s"], 2)
    return step


def run_build(events: Path, workdir: Path, args: argparse.Namespace, validate: bool) -> dict:
    """Build in a subprocess; return its manifest + wall time and peak RSS of the tree."""
    cmd = child_command("--child-build", events, workdir, args)
    if validate:
        cmd.append("--validate")
    return run_child(cmd, f"build of {events}")


def events_for(size: int, root: Path, seed: int) -> tuple[Path, float]:
    """Generate (or reuse) the synthetic event log of ``size`` events; (path, seconds)."""
    from mirec.data.synthetic import write_synthetic_events

    path = root / f"events_{size}"
    marker = path / "_COMPLETE"
    if marker.is_file():
        return path, 0.0
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    write_synthetic_events(path, size, seed=seed)
    marker.write_text(str(size))
    return path, time.perf_counter() - start


def latency_ms(call: Any, repeats: int) -> dict[str, float]:
    """p50 / p99 / mean in milliseconds of ``repeats`` calls (each call does its own input)."""
    times = np.empty(repeats)
    for k in range(repeats):
        start = time.perf_counter()
        call(k)
        times[k] = time.perf_counter() - start
    ms = times * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "calls": repeats,
    }


def time_reader(
    reader: Any, users: np.ndarray, rng: np.random.Generator, repeats: int
) -> dict[str, Any]:
    """Latency of one-user lookups and of batches of 100 random online users.

    As a serving process would be: warmed by ``WARMUP_CALLS`` lookups first (connection pool,
    Feast's request-context cache), then the objects alive after start-up are moved out of the
    garbage collector's reach (``gc.freeze``), so that a full collection (rare: none in 4,000
    one-user calls here) does not walk the ~0.4 M objects that the imports leave behind.
    """
    one = rng.choice(users, size=repeats)
    batches = rng.choice(users, size=(max(repeats // 10, 50), 100))
    for user in rng.choice(users, size=WARMUP_CALLS):
        reader.lookup([user])
    gc.collect()
    gc.freeze()
    try:
        return {
            "one_user": latency_ms(lambda k: reader.lookup([one[k]]), repeats),
            "batch_100": latency_ms(lambda k: reader.lookup(list(batches[k])), len(batches)),
        }
    finally:
        gc.unfreeze()


def bench_lookups(workdir: Path, redis_url: str, repeats: int) -> dict[str, Any]:
    """Apply + materialize the build in ``workdir`` to SQLite, then Redis; time lookups."""
    import pyarrow.parquet as pq

    from mirec.features import feast_io
    from mirec.features.repo import Layout, StoreSettings, render_repo
    from mirec.schema import SEQ_POS, USER_HISTORY_FV, USER_ID

    table = pq.read_table(Layout(workdir).table(USER_HISTORY_FV), columns=[USER_ID, SEQ_POS])
    latest = table.filter(table[SEQ_POS].is_null())[USER_ID].to_numpy(zero_copy_only=False)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"users_online": len(latest)}
    for store_kind in ("sqlite", "redis"):
        project = f"bench_{uuid.uuid4().hex[:8]}"
        settings = StoreSettings(project=project, online_store=store_kind, redis_url=redis_url)
        repo = render_repo(workdir, settings)
        feast_io.apply(repo)
        start = time.perf_counter()
        feast_io.materialize(repo)
        materialize_s = time.perf_counter() - start
        try:
            reader = feast_io.OnlineFeatures(feast_io.open_store(repo))
            timings = time_reader(reader, latest, rng, repeats)
            out[store_kind] = {"materialize_s": round(materialize_s, 2), **timings}
        finally:
            feast_io.teardown(repo)
    return out


def have_validation() -> bool:
    """Whether ``mirec.validation.quarantine`` (the Spark quarantine) is installed."""
    try:
        import mirec.validation.quarantine  # noqa: F401
    except ImportError:
        return False
    return True


def build_row(size: int, m: dict[str, Any]) -> dict[str, Any]:
    """The recorded numbers of one build."""
    target = TARGETS_S.get(size)
    return {
        "events": size,
        "users": m["counts"]["users"],
        "snapshot_rows": m["counts"]["snapshot_rows"],
        "training_rows": sum(m["training_examples"]["B"].values()),
        "vocab_size": m["vocab_size"],
        "truncated_users": m["counts"]["truncated_users"],
        "longest_history": m["counts"]["longest_history"],
        "build_s": m["wall_s"],
        "process_wall_s": m["process_wall_s"],
        "peak_rss_mb": m["peak_rss_mb"],
        "stages_s": m["seconds"],
        "spark_stages_s": round(sum(m["seconds"].values()), 1),
        "load_avg_1m": m["load_avg_1m"],
        "target_s": target,
        "meets_target": None if target is None else m["wall_s"] < target,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables."""
    lines = [
        "# Feature pipeline benchmark",
        "",
        f"Machine: {results['machine']}",
        "",
        f"Synthetic events: {DISTRIBUTION}.",
        "",
        "## Spark feature build",
        "",
    ]
    rows = []
    for key in sorted(results["builds"], key=lambda k: int(k)):
        b = results["builds"][key]
        rows.append(
            [
                f"{b['events']:.0e}",
                f"{b['users']:,}",
                f"{b['snapshot_rows']:,}",
                f"{b['training_rows']:,}",
                f"{b['build_s']:.1f}",
                f"{b.get('spark_stages_s', 0):.1f}",
                f"{b['peak_rss_mb']:,}",
                f"{b['build_s'] / b['events'] * 1e6:.1f}",
                "-" if b["target_s"] is None else f"< {b['target_s']:.0f}",
                b.get("load_avg_1m", "-"),
            ]
        )
    lines.append(
        format_table(
            [
                "events",
                "users",
                "snapshot rows",
                "training rows (B)",
                "build s",
                "Spark stages s",
                "peak RSS MiB",
                "s per 10^6 events",
                "target s",
                "load",
            ],
            rows,
        )
    )
    if results.get("lookup"):
        lk = results["lookup"]
        lines += [
            "",
            f"## Online lookup (in-process, warm; {lk['users_online']:,} users online, "
            f"build of {lk['build_events']:.0e} events, load {lk.get('load_avg_1m', '-')})",
            "",
        ]
        rows = []
        for kind in ("sqlite", "redis"):
            for shape in ("one_user", "batch_100"):
                r = lk[kind][shape]
                rows.append(
                    [
                        kind,
                        shape.replace("_", " "),
                        f"{r['p50_ms']:.3f}",
                        f"{r['p99_ms']:.3f}",
                        f"{r['mean_ms']:.3f}",
                        r["calls"],
                    ]
                )
        lines.append(
            format_table(["store", "request", "p50 ms", "p99 ms", "mean ms", "calls"], rows)
        )
    if results.get("validation"):
        v = results["validation"]
        lines += [
            "",
            f"## Validation overhead ({v['events']:.0e} events: Spark quarantine + GX suites)",
            "",
            format_table(
                ["build", "seconds"],
                [
                    ["without validation", f"{v['without_s']:.1f}"],
                    ["with validation", f"{v['with_s']:.1f}"],
                    ["quarantine stage (raw events)", f"{v['quarantine_stage_s']:.1f}"],
                    ["GX suites stage (written tables)", f"{v.get('suites_stage_s', 0.0):.1f}"],
                    ["overhead", f"{v['overhead_s']:.1f} ({v['overhead_pct']:.0f}%)"],
                ],
            ),
        ]
    lines += training_set_table(results.get("training_sets", {}))
    return "\n".join([*lines, "", NOTES]) + "\n"


def training_set_table(sets: dict[str, Any]) -> list[str]:
    """The training-set step's rows (empty when it was not run)."""
    if not sets:
        return []
    rows = []
    for key in sorted(sets, key=int):
        t = sets[key]
        target = t.get("target_s")
        wall = t["step_s"]
        rows.append(
            [
                f"{t['events']:.0e}",
                f"{t['rows']:,}",
                f"{t['users']:,}",
                f"{t['feast_apply_s']:.1f}",
                f"{t['spark_start_s']:.1f}",
                f"{t['join_write_s']:.1f}",
                f"{wall:.1f}",
                f"{t['process_wall_s']:.1f}",
                f"{t['peak_rss_mb']:,}",
                "-"
                if target is None
                else f"< {target:.0f} ({'met' if wall < target else 'missed'})",
                t.get("load_avg_1m", "-"),
            ]
        )
    heads = [
        "events",
        "training rows (B)",
        "users",
        "feast apply s",
        "Spark start s",
        "join + write s",
        "step s",
        "process s",
        "peak RSS MiB",
        "target s",
        "load",
    ]
    return [
        "",
        "## Training-set step (Feast point-in-time join, as the pipeline's make-training-set)",
        "",
        "Its own process over a finished build: render + `feast apply` (the publish step's work,",
        "not counted in step s), Python and Spark start, the point-in-time join of the protocol's",
        "training events with the `user_tower_v1` views, parquet write, stats and saved-dataset",
        "registration. step s = process s - feast apply s; the target applies to step s.",
        "",
        format_table(heads, rows),
    ]


def load_results(path: Path) -> dict[str, Any]:
    """Earlier results (so a partial run keeps the other sizes), or an empty record."""
    if path.is_file():
        return json.loads(path.read_text())
    return {"builds": {}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1e5,1e6,1e7,1e8", help="event counts, comma-separated")
    parser.add_argument("--workdir", help="scratch folder (default: a temp folder, removed)")
    parser.add_argument("--master", default="local[*]", help="Spark master")
    parser.add_argument("--driver-memory", default="8g", help="Spark driver memory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--lookups", type=int, default=2000, help="single-user lookups to time")
    parser.add_argument("--skip-lookup", action="store_true")
    parser.add_argument("--skip-validation", action="store_true")
    parser.add_argument(
        "--training-set-sizes",
        default="2e5,1e6,1e7",
        help="event counts for the training-set step (Feast point-in-time join); '' skips it",
    )
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    parser.add_argument("--child-build", help=argparse.SUPPRESS)
    parser.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-training-set", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_build:
        child_build(args)
        return
    if args.child_training_set:
        child_training_set(args)
        return
    sizes = sorted(parse_size(s) for s in args.sizes.split(",") if s)
    set_sizes = sorted(parse_size(s) for s in args.training_set_sizes.split(",") if s)
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="mirec-bench-features-"))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = load_results(out_dir / "features.json")
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"Spark master {args.master}, driver memory {args.driver_memory}"
    )
    results["distribution"] = DISTRIBUTION
    try:
        run_all(sizes, scratch, args, results)
        run_training_sets(set_sizes, scratch, args, results)
    finally:
        if not args.workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    (out_dir / "features.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    (out_dir / "features.md").write_text(markdown(results))
    print(markdown(results))


def run_all(
    sizes: list[int], scratch: Path, args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """Builds per size, then lookups on the smallest build, then the validation overhead."""
    for size in sizes:
        events, gen_s = events_for(size, scratch, args.seed)
        print(f"{size:.0e} events: generated in {gen_s:.1f} s; building ...", flush=True)
        workdir = scratch / f"build_{size}"
        manifest = run_build(events, workdir, args, validate=False)
        results["builds"][str(size)] = row = build_row(size, manifest)
        print(
            f"  build {row['build_s']:.1f} s, peak RSS {row['peak_rss_mb']:,} MiB, "
            f"stages {row['stages_s']}",
            flush=True,
        )
        if size != sizes[0]:
            shutil.rmtree(workdir, ignore_errors=True)
    if sizes and not args.skip_lookup:
        lookup = bench_lookups(scratch / f"build_{sizes[0]}", args.redis, args.lookups)
        results["lookup"] = dict(
            lookup, build_events=sizes[0], load_avg_1m=round(os.getloadavg()[0], 1)
        )
        print(f"lookups: {json.dumps(lookup)}", flush=True)
    if not sizes:
        return
    check = 10**6 if 10**6 in sizes else None
    if check and not args.skip_validation and have_validation():
        events, _ = events_for(check, scratch, args.seed)
        without = results["builds"][str(check)]["build_s"]
        manifest = run_build(events, scratch / "build_validated", args, validate=True)
        with_s = manifest["wall_s"]
        results["validation"] = {
            "events": check,
            "without_s": without,
            "with_s": with_s,
            "quarantine_stage_s": manifest["seconds"]["read_validate"],
            "suites_stage_s": manifest["seconds"].get("table_suites", 0.0),
            "overhead_s": round(with_s - without, 2),
            "overhead_pct": round(100 * (with_s - without) / without, 1),
        }
        print(f"validation: {results['validation']}", flush=True)


def run_training_sets(
    sizes: list[int], scratch: Path, args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """Per size: a feature build (timed, recorded), then the training-set step over it."""
    table = results.setdefault("training_sets", {})
    for size in sizes:
        events, gen_s = events_for(size, scratch, args.seed)
        workdir = scratch / f"training_set_build_{size}"
        print(
            f"{size:.0e} events: generated in {gen_s:.1f} s; build + training set ...", flush=True
        )
        manifest = run_build(events, workdir, args, validate=False)
        results["builds"][str(size)] = build_row(size, manifest)
        step = run_training_set(events, workdir, args)
        table[str(size)] = dict(step, events=size, target_s=TRAINING_SET_TARGETS_S.get(size))
        print(f"  training set: {json.dumps(step)}", flush=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
