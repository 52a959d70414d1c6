"""A feedback writer killed with SIGKILL mid-stream loses no acknowledged event (SQLite)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mirec.schema import EVENT_ID
from mirec.serving.events import open_event_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The writer: 4 threads, each appending one click at a time through group commit and printing
# its id only after ``write`` returned (the acknowledgement a client would get).
WRITER = """
import sys, threading
from datetime import UTC, datetime
from mirec.serving.events import FeedbackEvent, GroupCommitWriter, open_event_store

writer = GroupCommitWriter(open_event_store(sys.argv[1]))
out = threading.Lock()

def stream(worker):
    n = 0
    while True:
        event_id = f"{sys.argv[2]}-{worker}-{n}"
        event = FeedbackEvent(event_id, f"u{worker}", f"i{n % 50}", "click",
                              datetime.now(UTC), request_id=f"r{worker}-{n}")
        writer.write([event])
        with out:
            sys.stdout.write(event_id + "\\n")
            sys.stdout.flush()
        n += 1

for w in range(4):
    threading.Thread(target=stream, args=(w,), daemon=True).start()
threading.Event().wait()
"""


def _run_and_kill(db: Path, run: str, acks_before_kill: int) -> list[str]:
    """Start a writer, SIGKILL it after ``acks_before_kill`` acknowledgements; every ack."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), run], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    acked: list[str] = []
    try:
        for line in proc.stdout:
            acked.append(line.strip())
            if len(acked) >= acks_before_kill:
                proc.send_signal(signal.SIGKILL)
                break
        acked += [line.strip() for line in proc.stdout if line.strip()]  # printed before death
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return acked


def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    first = _run_and_kill(db, "a", 1500)
    second = _run_and_kill(db, "b", 500)  # a restarted writer appends to the same store
    store = open_event_store(db)
    stored = set(store.read_events()[EVENT_ID])
    lost = (set(first) | set(second)) - stored
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:5]}"
    assert len(first) >= 1500 and len(second) >= 500
    assert len(stored) >= len(first) + len(second)  # more may be committed, never fewer
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
