"""Feedback path throughput: clicks appended durably (group commit) and pushed to Feast.

Concurrent producer threads play ``POST /feedback`` handlers: each builds one click, calls
``GroupCommitWriter.write`` and counts it once the call returns (the acknowledgement). After each
commit the writer pushes the group's clicks into the online histories
(``mirec.features.push.FreshHistories``). At the end every acknowledged event must be in the store
and every user's online ``num_events`` must have grown by exactly its acknowledged clicks.

    python benchmarks/bench_feedback.py [--seconds 20] [--producers 16] [--online sqlite redis]

Writes benchmarks/results/feedback.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
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
from mirec.features.push import FreshHistories
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
    fresh = FreshHistories.from_repo(repo)
    store = open_event_store(store_url)
    groups: list[int] = []
    push_seconds: list[float] = []
    push_errors: list[str] = []

    def push(events: list[FeedbackEvent]) -> None:
        import pandas as pd

        start = time.perf_counter()
        frame = pd.DataFrame(
            {
                USER_ID: [e.user_id for e in events],
                ITEM_ID: [e.item_id for e in events],
                "event_ts": [e.event_ts for e in events],
            }
        )
        try:
            report = fresh.push_clicks(frame)
        except Exception as exc:
            push_errors.append(str(exc))
            raise
        if report.already_held or report.unknown_items:
            push_errors.append(f"{report}")
        groups.append(len(events))
        push_seconds.append(time.perf_counter() - start)

    writer = GroupCommitWriter(store, on_commit=push)
    acked: list[list[tuple[str, str, float]]] = [[] for _ in range(producers)]
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
            writer.write([event])
            acked[p].append((event.event_id, user, time.perf_counter() - start))
            n += 1

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(producers)]
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
    writer.close()
    rows = [row for part in acked for row in part]
    stored = set(store.read_events()[EVENT_ID])
    store.close()
    per_second = np.diff([0, *marks])
    latencies = np.asarray([r[2] for r in rows]) * 1000
    return {
        "acknowledged": len(rows),
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(rows) / elapsed, 1),
        "min_1s_window_per_s": int(per_second.min()) if len(per_second) else 0,
        "ack_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "ack_ms_p99": round(float(np.percentile(latencies, 99)), 2),
        "commits": len(groups),
        "mean_group": round(float(np.mean(groups)), 1) if groups else 0.0,
        "push_ms_mean": round(float(np.mean(push_seconds)) * 1000, 2) if push_seconds else 0.0,
        "lost_acknowledged": len({r[0] for r in rows} - stored),
        "push_errors": push_errors[:5],
        "clicks_by_user": Counter(r[1] for r in rows),
    }


def check_pushes(repo: Path, before: dict[str, int], clicks: Counter[str]) -> int:
    """Users whose online num_events did not grow by exactly their acknowledged clicks."""
    after = num_events(repo, list(before))
    return sum(1 for u in before if after[u] - before[u] != clicks.get(u, 0))


def write_results(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feedback.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Feedback path: durable append (group commit) + Feast push",
        "",
        f"{results['machine']}; {results['producers']} producer threads, "
        f"{results['seconds']} s per store; SQLite event store in WAL mode, synchronous=FULL.",
        "",
        "| online store | events/s | min 1 s window | ack p50 ms | ack p99 ms | commits |"
        " mean group | push ms | lost acks | users with wrong history |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["runs"].items():
        lines.append(
            f"| {name} | {r['events_per_s']:,} | {r['min_1s_window_per_s']:,} | "
            f"{r['ack_ms_p50']} | {r['ack_ms_p99']} | {r['commits']:,} | {r['mean_group']} | "
            f"{r['push_ms_mean']} | {r['lost_acknowledged']} | {r['wrong_histories']} |"
        )
    lines += ["", f"Target: >= {TARGET_PER_S:,.0f} events/s sustained with no loss."]
    (RESULTS / "feedback.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--online", nargs="+", default=["sqlite", "redis"])
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} cores",
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
    results["generated"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_results(results)


if __name__ == "__main__":
    main()
