"""Feedback path throughput: clicks appended durably (group commit) and pushed to Feast.

Concurrent producer threads play ``POST /feedback`` handlers and make the two calls
``FeedbackHandler.record`` makes, on the objects the server wires (``serving/common.py``,
``ServingApp.for_model``): ``sink.append([click])`` on a ``GroupCommitWriter`` over the SQLite
event store (returns once committed), then ``push.push_click(...)`` on ``FeastClickPush``
(returns once the click is in the user's online history; concurrent clicks share one push).
A click counts once both returned (the acknowledgement). At the end every acknowledged event
must be in the store and every user's online ``num_events`` must have grown by exactly its
acknowledged clicks. The HTTP layer (BentoML) is not part of this measurement.

With ``--http N`` the same checks run against a real ``mirec serve`` driven by N keep-alive
clients (``--http-seconds`` each): one ``POST /feedback`` per click, and the clicks of an
answer in one ``POST /feedback/batch``.

    python benchmarks/bench_feedback.py [--seconds 20] [--producers 32] [--online sqlite redis]
        [--http 16 --http-seconds 60 --http-modes single batch]

Writes benchmarks/results/feedback.{json,md}, with the 1-minute load average before and after
each run (the cores are shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mirec.data.events import write_events_parquet
from mirec.data.synthetic import generate
from mirec.features import feast_io
from mirec.features.build import FeatureBuildConfig, build_features, write_catalog
from mirec.features.repo import Layout, StoreSettings, render_repo
from mirec.schema import (
    EVENT_CLICK,
    EVENT_ID,
    ITEM_ATTRIBUTES,
    ITEM_ID,
    NUM_EVENTS,
    USER_ATTRIBUTES,
    USER_ID,
)
from mirec.serving.events import FeedbackEvent, GroupCommitWriter, open_event_store
from mirec.serving.feedback import FeastClickPush

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_PER_S = 1000.0


def build_repo(root: Path) -> tuple[Path, list[str], list[str]]:
    """A Spark build of 2,000 synthetic users and 1,000 items; (workdir, users, items)."""
    data = generate(num_users=2000, num_items=1000, num_clusters=10, mean_len=20, seed=0)
    layout = Layout(root)
    write_events_parquet(data.events, layout.events)
    items = write_catalog(data.items, ITEM_ID, ITEM_ATTRIBUTES, layout.catalog_items)
    users = write_catalog(data.users, USER_ID, USER_ATTRIBUTES, layout.catalog_users)
    build_features(
        layout.events, root, items_path=items, users_path=users, cfg=FeatureBuildConfig()
    )
    user_ids = sorted(data.events[USER_ID].astype(str).unique())
    return root, user_ids, sorted(data.items[ITEM_ID].astype(str))


def publish(build: Path, root: Path, online: str) -> Path:
    shutil.copytree(build, root)
    project = f"bench_feedback_{online}_{uuid.uuid4().hex[:6]}"
    repo = render_repo(root, StoreSettings(project=project, online_store=online))  # type: ignore[arg-type]
    feast_io.apply(repo)
    feast_io.materialize(repo)
    return repo


def num_events(repo: Path, users: list[str]) -> dict[str, int]:
    store = feast_io.open_store(repo)
    got = feast_io.get_online_histories(store, users)
    return {u: int((v or {}).get(NUM_EVENTS) or 0) for u, v in got.items()}


def run_load(
    repo: Path, store_url: str, users: list[str], items: list[str], seconds: float, producers: int
) -> dict[str, Any]:
    """Drive the feedback path for ``seconds``; returns throughput, latency and loss checks."""
    push = FeastClickPush(repo)
    store = open_event_store(store_url)
    sink = GroupCommitWriter(store)
    groups: list[int] = []
    push_seconds: list[float] = []
    push_errors: list[str] = []
    fresh = push.fresh
    inner = fresh.push_click_rows

    def timed(clicks: Any) -> Any:  # the push thread's calls: group size and time
        start = time.perf_counter()
        report = inner(clicks)
        if report.already_held or report.unknown_items:
            push_errors.append(f"{report}")
        groups.append(len(clicks))
        push_seconds.append(time.perf_counter() - start)
        return report

    fresh.push_click_rows = timed  # type: ignore[method-assign]
    commits_before = _commit_count(sink)
    acked: list[list[tuple[str, str, float, float]]] = [[] for _ in range(producers)]
    stop = threading.Event()
    per_user = np.array_split(np.asarray(users, dtype=object), producers)

    def producer(p: int) -> None:
        mine, n = list(per_user[p]), 0
        while not stop.is_set():
            user = mine[n % len(mine)]
            event = FeedbackEvent(
                f"bench-{p}-{n}",
                user,
                items[(n * 7 + p) % len(items)],
                EVENT_CLICK,
                datetime.now(UTC),
                request_id=f"req-{p}-{n}",
            )
            start = time.perf_counter()
            sink.append([event])
            committed = time.perf_counter()
            try:
                push.push_click(event.user_id, event.item_id, event.event_ts)
            except Exception as exc:
                push_errors.append(str(exc))
            done = time.perf_counter()
            acked[p].append((event.event_id, user, committed - start, done - start))
            n += 1

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(producers)]
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    marks = []
    while time.perf_counter() - began < seconds:
        time.sleep(1.0)
        marks.append(sum(len(a) for a in acked))
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    load_after = os.getloadavg()[0]
    sink.close()
    push.close()
    commits = _commit_count(sink) - commits_before
    rows = [row for part in acked for row in part]
    stored = set(store.read_events()[EVENT_ID])
    store.close()
    per_second = np.diff([0, *marks])
    commit_ms = np.asarray([r[2] for r in rows]) * 1000
    latencies = np.asarray([r[3] for r in rows]) * 1000
    return {
        "acknowledged": len(rows),
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(rows) / elapsed, 1),
        "min_1s_window_per_s": int(per_second.min()) if len(per_second) else 0,
        "commit_ms_p50": round(float(np.percentile(commit_ms, 50)), 2),
        "ack_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "ack_ms_p99": round(float(np.percentile(latencies, 99)), 2),
        "commits": commits,
        "mean_commit_group": round(len(rows) / commits, 1) if commits else 0.0,
        "pushes": len(groups),
        "mean_group": round(float(np.mean(groups)), 1) if groups else 0.0,
        "push_ms_mean": round(float(np.mean(push_seconds)) * 1000, 2) if push_seconds else 0.0,
        "push_us_per_event": round(sum(push_seconds) / max(sum(groups), 1) * 1e6, 1),
        "lost_acknowledged": len({r[0] for r in rows} - stored),
        "push_errors": push_errors[:5],
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(load_after, 2),
        "clicks_by_user": Counter(r[1] for r in rows),
    }


def _commit_count(sink: GroupCommitWriter) -> int:
    """Transactions the writer committed so far."""
    return sink.commits


async def _feedback_client(
    host: str, port: int, users: list[str], stop: float, out: list[Any], seed: int, batch: bool
) -> None:
    """One keep-alive connection: ``/recommend`` (k 20), then a click on each answered item,
    one ``/feedback`` request per click or all of them in one ``/feedback/batch``."""
    from bench_serving import _read_head

    reader, writer = await asyncio.open_connection(host, port)
    rng = random.Random(seed)

    async def post(path: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, length = await _read_head(reader)
        return status, await reader.readexactly(length)

    try:
        while time.perf_counter() < stop:
            status, raw = await post("/recommend", {"user_id": rng.choice(users), "k": 20})
            out.append(("recommend", status, 0.0, None))
            if status != 200:
                continue
            answer = json.loads(raw)
            clicks = [{"request_id": answer["request_id"], "item_id": i} for i in answer["items"]]
            if batch:
                start = time.perf_counter()
                status, raw = await post("/feedback/batch", {"events": clicks})
                took = time.perf_counter() - start
                out.append(("batch", status, took, None))
                for ack in json.loads(raw)["events"] if status == 200 else []:
                    out.append(("feedback", status, took, ack))
                continue
            for body in clicks:
                if time.perf_counter() >= stop:
                    break
                start = time.perf_counter()
                status, raw = await post("/feedback", body)
                ack = json.loads(raw) if status == 200 else None
                out.append(("feedback", status, time.perf_counter() - start, ack))
    finally:
        writer.close()


def _server(deployment: dict[str, Any], events: Path, log_path: Path, serving_dir: str) -> Any:
    """``mirec serve --events`` (in-process mode) as bench_serving's ``Server``."""
    from bench_serving import Server, free_port

    server = Server.__new__(Server)
    server.port = free_port()
    cmd = [str(Path(sys.executable).with_name("mirec")), "serve", "--registry"]
    cmd += [deployment["registry"], "--port", str(server.port), "--mode", "inprocess"]
    cmd += ["--events", str(events)] + (["--serving-dir", serving_dir] if serving_dir else [])
    with log_path.open("wb") as out:
        server.proc = subprocess.Popen(
            cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server.url = f"http://127.0.0.1:{server.port}"
    server.log_path = log_path
    return server


def run_http(
    work: Path,
    seconds: float,
    concurrency: int,
    redis_url: str,
    serving_dir: str = "",
    batch: bool = False,
) -> dict[str, Any]:
    """``mirec serve`` with ``--events`` (SQLite) and a Redis online store, driven over HTTP;
    ``batch``: each answer's clicks go in one ``/feedback/batch`` request."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_serving import build_deployment

    deployment = build_deployment(work, 2000, 2000, redis_url)
    repo = Path(deployment["repo"])
    users = list(deployment["users"])
    events = work / f"events_{uuid.uuid4().hex[:6]}.db"
    before = num_events(repo, users)
    server = _server(deployment, events, work / "serve.log", serving_dir)
    try:
        server.wait_ready()
        host, port = server.url.split("//", 1)[1].split(":")
        out: list[Any] = []
        load_before = os.getloadavg()[0]
        began = time.perf_counter()

        async def drive() -> None:
            stop = began + seconds
            await asyncio.gather(
                *(
                    _feedback_client(host, int(port), users, stop, out, seed, batch)
                    for seed in range(concurrency)
                )
            )

        asyncio.run(drive())
        elapsed = time.perf_counter() - began
        load_after = os.getloadavg()[0]
        server.stop()  # every answered click is committed and pushed before its answer
        acks = [r[3] for r in out if r[0] == "feedback" and r[1] == 200]
        clicks = Counter(str(a["user_id"]) for a in acks)
        wrong = check_pushes(repo, before, clicks)
    finally:
        server.stop()
        feast_io.teardown(repo)  # the Redis project; the next run builds a new deployment
        (work / "deployment.json").unlink(missing_ok=True)
    errors = sum(1 for r in out if r[1] != 200)
    acked_kind = "batch" if batch else "feedback"  # the latency of the request that acked
    latencies = np.asarray([r[2] for r in out if r[0] == acked_kind and r[1] == 200]) * 1000
    store = open_event_store(str(events))
    stored = set(store.read_events()[EVENT_ID])
    store.close()
    keys = {f"{a['request_id']}:{a['item_id']}:click" for a in acks}
    feedback_requests = sum(1 for r in out if r[0] == acked_kind)
    return {
        "mode": "batch" if batch else "single",
        "acknowledged": len(acks),
        "feedback_requests_per_s": round(feedback_requests / elapsed, 1),
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(acks) / elapsed, 1),
        "recommend_per_s": round(sum(1 for r in out if r[0] == "recommend") / elapsed, 1),
        "ack_ms_p50": round(float(np.percentile(latencies, 50)), 2) if len(latencies) else 0.0,
        "ack_ms_p99": round(float(np.percentile(latencies, 99)), 2) if len(latencies) else 0.0,
        "errors": errors,
        "not_pushed": sum(1 for a in acks if not a.get("pushed")),
        "lost_acknowledged": len(keys - stored),
        "wrong_histories": wrong,
        "concurrency": concurrency,
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(load_after, 2),
        "project": deployment["project"],
        "serving_dir": serving_dir or "serving/ of this checkout",
    }


def check_pushes(repo: Path, before: dict[str, int], clicks: Counter[str]) -> int:
    """Users whose online num_events did not grow by exactly their acknowledged clicks."""
    after = num_events(repo, list(before))
    return sum(1 for u in before if after[u] - before[u] != clicks.get(u, 0))


def write_results(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feedback.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Feedback path: durable append (group commit) + Feast push, as the server wires it",
        "",
        f"{results['machine']}; {results['producers']} producer threads, "
        f"{results['seconds']} s per store; SQLite event store in WAL mode, synchronous=FULL. "
        "Each producer makes the handler's two calls (GroupCommitWriter.append, then "
        "FeastClickPush.push_click); no HTTP.",
        "",
        "| online store | events/s | min 1 s window | ack p50 ms | ack p99 ms | commit p50 ms |"
        " commits | events/commit | pushes | events/push | push ms | push µs/event |"
        " lost acks | users with wrong history | load 1m before/after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["runs"].items():
        lines.append(
            f"| {name} | {r['events_per_s']:,} | {r['min_1s_window_per_s']:,} | "
            f"{r['ack_ms_p50']} | {r['ack_ms_p99']} | {r['commit_ms_p50']} | {r['commits']:,} | "
            f"{r['mean_commit_group']} | {r['pushes']:,} | {r['mean_group']} | "
            f"{r['push_ms_mean']} | {r['push_us_per_event']} | {r['lost_acknowledged']} | "
            f"{r['wrong_histories']} | {r['load_1m_before']} / {r['load_1m_after']} |"
        )
    http_runs = results.get("http") or []
    if http_runs:
        lines += [
            "",
            f"Over HTTP: `mirec serve` (in-process mode, 1 worker, `--events` SQLite, Redis "
            f"online store), {http_runs[0]['concurrency']} keep-alive clients each asking "
            "/recommend (k 20) and then clicking every answered item: one `POST /feedback` per "
            "click (single), or the answer's 20 clicks in one `POST /feedback/batch` (batch). "
            "Ack ms is the latency of the request that acknowledged the click.",
            "",
            "| mode | feedback events/s | feedback requests/s | /recommend req/s | ack p50 ms |"
            " ack p99 ms | errors | not pushed | lost acks | users with wrong history |"
            " load 1m before/after |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for http in http_runs:
            lines.append(
                f"| {http['mode']} | {http['events_per_s']:,} | "
                f"{http['feedback_requests_per_s']:,} | {http['recommend_per_s']} | "
                f"{http['ack_ms_p50']} | {http['ack_ms_p99']} | {http['errors']} | "
                f"{http['not_pushed']} | {http['lost_acknowledged']} | "
                f"{http['wrong_histories']} | {http['load_1m_before']} / "
                f"{http['load_1m_after']} |"
            )
    lines += ["", f"Target: >= {TARGET_PER_S:,.0f} events/s sustained with no loss."]
    (RESULTS / "feedback.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--online", nargs="*", default=["sqlite", "redis"])
    parser.add_argument("--http", type=int, default=0, help="also over HTTP, this many clients")
    parser.add_argument("--http-seconds", type=float, default=60.0)
    parser.add_argument(
        "--http-modes", nargs="*", default=["single", "batch"], choices=["single", "batch"]
    )
    parser.add_argument("--http-workdir", default=".mirec/bench_feedback_http")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--serving-dir", default="", help="mirec serve --serving-dir (HTTP)")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "producers": args.producers,
        "seconds": args.seconds,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-feedback-") as tmp:
        build, users, items = build_repo(Path(tmp) / "build")
        for online in args.online:
            repo = publish(build, Path(tmp) / online, online)
            try:
                before = num_events(repo, users)
                run = run_load(
                    repo,
                    str(Path(tmp) / f"events_{online}.db"),
                    users,
                    items,
                    args.seconds,
                    args.producers,
                )
                clicks = run.pop("clicks_by_user")
                run["wrong_histories"] = check_pushes(repo, before, clicks)
                results["runs"][online] = run
                print(online, json.dumps(run))
            finally:
                feast_io.teardown(repo)
    if args.http:
        work = Path(args.http_workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        results["http"] = []
        for mode in args.http_modes:
            run = run_http(
                work, args.http_seconds, args.http, args.redis, args.serving_dir, mode == "batch"
            )
            results["http"].append(run)
            print("http", json.dumps(run))
    results["generated"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_results(results)


if __name__ == "__main__":
    main()
