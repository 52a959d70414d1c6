"""Serving benchmark: a closed-loop load generator (its own process) against ``mirec serve``.

Setup (in ``--workdir``): synthetic events over 10^5 items -> Spark feature build -> Feast
repository with the Redis online store (the shared Redis on 127.0.0.1:6379, a project of its
own, torn down at the end unless ``--keep``) -> a ComiRec-SA model (D 64, K 4) trained for one
epoch -> HNSW index over the 10^5 item vectors -> registry version in production.

Each configuration starts ``mirec serve`` (in-process composition, with and without request
batching, and the composed services over ``bentoml.depends``), then for each concurrency level
runs ``bench_serving.py loadgen`` as a separate process: C keep-alive HTTP/1.1 connections,
each sending the next ``POST /recommend`` (random known user, k 20) as soon as the last answer
arrived, for ``--seconds``. Client side: p50 / p99 latency, requests/s, errors. Server side
(``/metrics`` before and after the level): mean seconds per request in each stage (lookup =
Feast, tower, faiss, validate, respond, queue = waiting for the batch), in the handler, and in
BentoML's request path; the rest of the client latency is the framework, the hops and the
client. Also per level: CPU milliseconds per request on the service's event-loop threads and
on its other threads (psutil), and the 1-minute load average before and after (the 2 cores
are shared). Writes ``benchmarks/results/serving.json`` and ``serving.md``::

    python benchmarks/bench_serving.py --seconds 60                 # the full run
    python benchmarks/bench_serving.py --seconds 10 --modes batched  # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench_serving")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LEVELS = (1, 16, 64)
MODES = {  # name -> (mirec serve --mode, environment)
    "batched": ("inprocess", {"MIREC_MAX_BATCH": "64"}),
    "unbatched": ("inprocess", {"MIREC_MAX_BATCH": "1"}),
    "batched_2workers": ("inprocess", {"MIREC_MAX_BATCH": "64", "MIREC_WORKERS": "2"}),
    "composed": ("composed", {"MIREC_MAX_BATCH": "64"}),
}
TRAIN = {
    "data": {"protocol": "B", "max_len": 50},
    "model": {"name": "comirec_sa", "dim": 64, "num_interests": 4, "dropout": 0.1},
    "loss": {"kind": "sampled_softmax", "num_negatives": 256},
    "optim": {"max_epochs": 1, "batch_size": 256, "num_threads": 1},
    "index": {"kind": "hnsw", "hnsw_m": 32, "hnsw_ef_search": 64, "min_recall": 0.0},
}
STAGES = ("validate", "lookup", "tower", "faiss", "respond", "queue")


# --- setup ------------------------------------------------------------------------------------


def build_deployment(work: Path, items: int, users: int, redis_url: str) -> dict[str, Any]:
    """Features, model, index and registry under ``work`` (reused when already there)."""
    done = work / "deployment.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    from mirec.config import from_dict
    from mirec.data.synthetic import generate
    from mirec.data.vocab import Vocabulary
    from mirec.features import feast_io
    from mirec.features.build import build_dataset
    from mirec.features.repo import Layout, StoreSettings, render_repo
    from mirec.registry import PRODUCTION, Registry
    from mirec.training import train

    os.environ["BENTOML_HOME"] = str(work / "registry" / "bentoml")  # the registry default
    dataset = generate(num_users=users, num_items=items, num_clusters=200, mean_len=20, seed=11)
    root = work / "features"
    build_dataset(dataset, root, now=datetime.now(UTC) - timedelta(minutes=1))
    project = f"bench_{uuid.uuid4().hex[:8]}"
    repo = render_repo(
        root, StoreSettings(project=project, online_store="redis", redis_url=redis_url)
    )
    feast_io.apply(repo)
    feast_io.materialize(repo)
    cfg = from_dict(TRAIN)
    result = train(
        cfg, dataset, work / "run", vocab=Vocabulary.load(Layout(root).vocab), progress=False
    )
    index_info = _index(result.bundle_dir)
    registry = Registry(work / "registry")
    entry = registry.register(
        result.bundle_dir,
        metrics=result.metrics,
        data_fingerprint=f"bench-{items}",
        config=cfg.model_dump(mode="json"),
        code_version="bench",
        lineage={"feature_repo": str(repo)},
    )
    registry.set_stage(PRODUCTION, entry.version)
    info = {
        "registry": str(work / "registry"),
        "repo": str(repo),
        "project": project,
        "items": items,
        "users": sorted(dataset.events["user_id"].astype(str).unique().tolist()),
        "index": index_info,
    }
    done.write_text(json.dumps(info))
    return info


def _index(bundle_dir: Path) -> dict[str, Any]:
    from mirec.bundle import INDEX_FILE, ModelBundle, attach_file
    from mirec.index import build_index, save_index

    bundle = ModelBundle.load(bundle_dir)
    vecs = bundle.item_vectors()[1:]
    index, info = build_index(vecs, np.arange(1, len(vecs) + 1), bundle.config.index)
    save_index(index, bundle_dir / INDEX_FILE)
    attach_file(bundle_dir, INDEX_FILE, extra={"index": info.to_dict()})
    return info.to_dict()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``mirec serve`` as a subprocess (its own process group, stopped at the end)."""

    def __init__(self, deployment: dict[str, Any], mode: str, env: dict[str, str], log_path: Path):
        self.port = free_port()
        cmd = [str(Path(sys.executable).with_name("mirec")), "serve", "--registry"]
        cmd += [deployment["registry"], "--port", str(self.port), "--mode", mode]
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, env={**os.environ, **env, "OMP_NUM_THREADS": "1"}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path

    def wait_ready(self, timeout: float = 300) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mirec serve exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"mirec serve not ready after {timeout} s")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far: the service processes' main threads (the event loops), their
        other threads (the batch thread, faiss and torch) and the arbiter process."""
        import psutil

        out = {"loop": 0.0, "threads": 0.0, "arbiter": 0.0}
        root = psutil.Process(self.proc.pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                threads = proc.threads()
            except psutil.Error:
                continue
            for thread in threads:
                used = thread.user_time + thread.system_time
                if proc.pid == root.pid:
                    out["arbiter"] += used
                else:
                    out["loop" if thread.id == proc.pid else "threads"] += used
        return out

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# --- server-side timings ---------------------------------------------------------------------


def _sums(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for the histogram sums and counts the report reads."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        name = key.split("{", 1)[0]
        if name.endswith(("_sum", "_count")) or name == "mirec_requests_total":
            out[key] = out.get(key, 0.0) + float(value)
    return out


def _total(delta: dict[str, float], name: str, *needles: str) -> float:
    return sum(
        v for k, v in delta.items() if k.split("{")[0] == name and all(n in k for n in needles)
    )


def server_breakdown(before: str, after: str) -> dict[str, float]:
    """Mean milliseconds per answered request in each server-side part, over one level."""
    a, b = _sums(before), _sums(after)
    delta = {k: b[k] - a.get(k, 0.0) for k in b}
    count = _total(delta, "mirec_request_seconds_count", '"/recommend"')
    if not count:
        return {}
    out = {
        f"{stage}_ms": 1e3 * _total(delta, "mirec_stage_seconds_sum", f'stage="{stage}"') / count
        for stage in STAGES
    }
    out["handler_ms"] = 1e3 * _total(delta, "mirec_request_seconds_sum", '"/recommend"') / count
    bento = _total(delta, "bentoml_service_request_duration_seconds_sum", "/recommend")
    bento_n = _total(delta, "bentoml_service_request_duration_seconds_count", "/recommend")
    out["bentoml_request_ms"] = 1e3 * bento / bento_n if bento_n else float("nan")
    batches = _total(delta, "mirec_batch_size_count")
    out["mean_batch"] = _total(delta, "mirec_batch_size_sum") / batches if batches else 0.0
    return out


# --- load generator (its own process) --------------------------------------------------------


async def _client(host: str, port: int, users: list[str], stop: float, out: list[Any]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rng = random.Random()
    try:
        while time.perf_counter() < stop:
            body = json.dumps({"user_id": rng.choice(users), "k": 20}).encode()
            head = (
                f"POST /recommend HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            start = time.perf_counter()
            writer.write(head + body)
            status, length = await _read_head(reader)
            await reader.readexactly(length)
            out.append((time.perf_counter() - start, status))
    finally:
        writer.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return status, length


async def _load(url: str, users: list[str], concurrency: int, seconds: float) -> list[Any]:
    host, port = url.split("//", 1)[1].split(":")
    out: list[Any] = []
    stop = time.perf_counter() + seconds
    results = await asyncio.gather(
        *(_client(host, int(port), users, stop, out) for _ in range(concurrency)),
        return_exceptions=True,
    )
    out.extend((float("nan"), -1) for r in results if isinstance(r, BaseException))
    return out


def loadgen_main(args: argparse.Namespace) -> int:
    users = json.loads(Path(args.users).read_text())
    start = time.perf_counter()
    samples = asyncio.run(_load(args.url, users, args.concurrency, args.seconds))
    wall = time.perf_counter() - start
    ok = np.array([s for s, status in samples if status == 200])
    errors = sum(1 for _, status in samples if status != 200)
    report = {
        "concurrency": args.concurrency,
        "seconds": round(wall, 2),
        "requests": len(samples),
        "errors": errors,
        "rps": round(len(ok) / wall, 1),
        "p50_ms": round(1e3 * float(np.percentile(ok, 50)), 2) if len(ok) else None,
        "p99_ms": round(1e3 * float(np.percentile(ok, 99)), 2) if len(ok) else None,
        "mean_ms": round(1e3 * float(ok.mean()), 2) if len(ok) else None,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


def run_level(server: Server, users_file: Path, concurrency: int, seconds: float) -> dict:
    """One level: a warm-up, then the load generator process, with /metrics around it."""
    warm = [sys.executable, __file__, "loadgen", "--url", server.url, "--users", str(users_file)]
    subprocess.run([*warm, "--concurrency", "4", "--seconds", "2"], check=True,
                   capture_output=True)  # fmt: skip
    before, cpu_before, load_before = server.metrics(), server.cpu_seconds(), os.getloadavg()[0]
    cmd = [*warm, "--concurrency", str(concurrency), "--seconds", str(seconds)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    cpu_after = server.cpu_seconds()
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["server"] = {
        k: round(v, 3) for k, v in server_breakdown(before, server.metrics()).items()
    }
    answered = max(1, report["requests"] - report["errors"])
    report["server_cpu_ms"] = {  # CPU per answered request, by where it ran
        part: round(1e3 * (cpu_after[part] - cpu_before[part]) / answered, 3) for part in cpu_after
    }
    report["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    log.info("c%d: %s", concurrency, report)
    return report


# --- the work without HTTP ------------------------------------------------------------------


def inprocess_costs(deployment: dict[str, Any], rounds: int = 300) -> dict[str, Any]:
    """Milliseconds of one request's work in this process: no HTTP, no BentoML.

    Batch 1 and batch 16 through ``ServingApp.recommend_batch`` (per stage), and the
    pydantic JSON encoding and decoding of one request and response.
    """
    from mirec.serving.app import ServingApp
    from mirec.serving.schemas import RecommendRequest, RecommendResponse

    app = ServingApp.from_registry(deployment["registry"])
    rng = random.Random(0)
    users = deployment["users"]
    out: dict[str, Any] = {}
    for batch in (1, 16):
        totals: dict[str, float] = {}
        walls = []
        for _ in range(rounds // batch + 5):
            reqs = [RecommendRequest(user_id=rng.choice(users), k=20) for _ in range(batch)]
            start = time.perf_counter()
            (_, times), *_ = app.recommend_batch(reqs)
            walls.append(time.perf_counter() - start)
            for stage, sec in times.seconds.items():
                totals[stage] = totals.get(stage, 0.0) + sec
        n = len(walls)
        out[f"batch{batch}"] = {
            "batch_ms_p50": round(1e3 * float(np.median(walls)), 3),
            "per_request_ms": round(1e3 * float(np.median(walls)) / batch, 3),
            **{f"{k}_ms": round(1e3 * v / n, 3) for k, v in totals.items()},
        }
    answer = app.recommend(RecommendRequest(user_id=users[0], k=20))
    body = json.dumps({"user_id": users[0], "k": 20})
    start = time.perf_counter()
    for _ in range(2000):
        RecommendRequest.model_validate_json(body)
        RecommendResponse.model_validate(answer.model_dump()).model_dump_json()
    out["serialization_ms"] = round((time.perf_counter() - start) / 2000 * 1e3, 4)
    out["load"] = round(os.getloadavg()[0], 2)
    return out


# --- report ----------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    """The markdown table of a result."""
    lines = [
        "# Serving benchmark",
        "",
        f"{result['when']}, {result['machine']}. {result['note']}",
        "",
        f"Index: {result['index']['kind']} over {result['index']['num_items']:,} items "
        f"({result['index']['params']}); model ComiRec-SA D 64 K 4; Feast online store Redis "
        "(127.0.0.1:6379); one `POST /recommend` = one random known user, k 20.",
        "",
        "| mode | c | req/s | p50 ms | p99 ms | errors | batch | lookup | tower | faiss "
        "| other stages | queue | handler | bentoml path | rest (framework, hops, client) "
        "| CPU loop | CPU threads | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, levels in result["modes"].items():
        for lv in levels:
            s = lv["server"]
            other = s.get("validate_ms", 0) + s.get("respond_ms", 0)
            rest = (lv["mean_ms"] or 0) - s.get("handler_ms", 0)
            cpu = lv.get("server_cpu_ms", {})
            load = "-".join(f"{x:.1f}" for x in lv.get("load", []))
            lines.append(
                f"| {mode} | {lv['concurrency']} | {lv['rps']:,.0f} | {lv['p50_ms']} | "
                f"{lv['p99_ms']} | {lv['errors']} | {s.get('mean_batch', 0):.1f} | "
                f"{s.get('lookup_ms', 0):.2f} | {s.get('tower_ms', 0):.2f} | "
                f"{s.get('faiss_ms', 0):.2f} | {other:.2f} | {s.get('queue_ms', 0):.2f} | "
                f"{s.get('handler_ms', 0):.2f} | {s.get('bentoml_request_ms', 0):.2f} | "
                f"{rest:.2f} | {cpu.get('loop', float('nan')):.2f} | "
                f"{cpu.get('threads', float('nan')):.2f} | {load or '-'} |"
            )
    if "inprocess" in result:
        lines += ["", "The work alone, in one process (no HTTP, no BentoML; load average "
                  f"{result['inprocess'].get('load', '?')} at the end), ms:", "",
                  "| batch | per batch p50 | per request | lookup | tower | faiss | other |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in result["inprocess"].items():
            if not isinstance(row, dict):
                continue
            other = row.get("validate_ms", 0) + row.get("respond_ms", 0)
            lines.append(
                f"| {name.removeprefix('batch')} | {row['batch_ms_p50']} | "
                f"{row['per_request_ms']} | {row.get('lookup_ms', 0)} | {row.get('tower_ms', 0)} "
                f"| {row.get('faiss_ms', 0)} | {other:.3f} |"
            )
        lines += ["", f"pydantic decode + encode of one request and response: "
                  f"{result['inprocess']['serialization_ms']} ms."]  # fmt: skip
    lines += ["", "Stage columns are mean milliseconds per request (server side, from "
              "`/metrics`); a batched stage counts its whole batch time for every request in "
              "it. `rest` = client mean latency - handler time. `CPU loop` / `CPU threads`: CPU "
              "milliseconds per answered request on the service processes' event-loop threads "
              "(HTTP, BentoML, the handler) and on their other threads (the batch: lookup, "
              "tower, faiss); `load`: 1-minute load average before-after the level (2 cores, "
              "shared: above 2, other jobs took CPU from this one).", ""]  # fmt: skip
    return "\n".join(lines)


def bench_main(args: argparse.Namespace) -> int:
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    deployment = build_deployment(work, args.items, args.num_users, args.redis)
    os.environ["BENTOML_HOME"] = str(work / "registry" / "bentoml")  # the registry default
    users_file = work / "users.json"
    users_file.write_text(json.dumps(deployment["users"]))
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "note": args.note,
        "seconds_per_level": args.seconds,
        "index": deployment["index"],
        "modes": {},
        "ready_s": {},
    }
    if not args.skip_inprocess:
        result["inprocess"] = inprocess_costs(deployment)
        log.info("in process: %s", result["inprocess"])
    for mode in args.modes.split(","):
        serve_mode, env = MODES[mode]
        server = Server(deployment, serve_mode, env, work / f"serve_{mode}.log")
        try:
            result["ready_s"][mode] = round(server.wait_ready(), 1)
            result["modes"][mode] = [
                run_level(server, users_file, c, args.seconds) for c in args.levels
            ]
        finally:
            server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.merge and (RESULTS / "serving.json").is_file():
        old = json.loads((RESULTS / "serving.json").read_text())
        result["modes"] = {**old["modes"], **result["modes"]}
        result["ready_s"] = {**old.get("ready_s", {}), **result["ready_s"]}
        result.setdefault("inprocess", old.get("inprocess"))
        result["note"] = f"{old.get('note', '')} {args.note}".strip()
    (RESULTS / "serving.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "serving.md").write_text(render(result))
    log.info("wrote %s", RESULTS / "serving.md")
    if not args.keep:  # the Feast project's keys leave the shared Redis; a rerun rebuilds
        from mirec.features import feast_io

        feast_io.teardown(deployment["repo"])
        (work / "deployment.json").unlink()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    gen = sub.add_parser("loadgen", help="the load generator process (used by the benchmark)")
    gen.add_argument("--url", required=True)
    gen.add_argument("--users", required=True, help="JSON list of user ids")
    gen.add_argument("--concurrency", type=int, required=True)
    gen.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=60.0, help="per level (default 60)")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")],
                        default=list(LEVELS))  # fmt: skip
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {sorted(MODES)}")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--num-users", type=int, default=5_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--workdir", default=".mirec/bench_serving")
    parser.add_argument("--note", default="", help="free text for the report (machine load)")
    parser.add_argument("--merge", action="store_true", help="keep the other modes' results")
    parser.add_argument("--skip-inprocess", action="store_true", help="no in-process timings")
    parser.add_argument(
        "--keep", action="store_true", help="keep the Feast project in Redis for the next run"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return loadgen_main(args) if args.command == "loadgen" else bench_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
