"""The feedback event store on SQLite: append, dedupe, bad events, counts, export, group commit."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from mirec.data.events import make_events
from mirec.errors import ConfigError, DataValidationError
from mirec.schema import (
    EVENT_CLICK,
    EVENT_ID,
    EVENT_IMPRESSION,
    EVENT_TS,
    MODEL_VERSION,
    POSITION,
    REQUEST_ID,
    SEQ_POS,
    VARIANT,
)
from mirec.serving.events import (
    EventStore,
    FeedbackEvent,
    GroupCommitWriter,
    merge_feedback,
    open_event_store,
)

T0 = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def impressions(request: str, user: str, items: list[str], version: str, variant: str):
    return [
        FeedbackEvent(
            f"{request}:imp:{pos}",
            user,
            item,
            EVENT_IMPRESSION,
            T0,
            request_id=request,
            model_version=version,
            variant=variant,
            position=pos,
        )
        for pos, item in enumerate(items)
    ]


def click(request: str, user: str, item: str, at: datetime = T0) -> FeedbackEvent:
    return FeedbackEvent(f"{request}:click:{item}", user, item, EVENT_CLICK, at, request_id=request)


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return open_event_store(tmp_path / "events.db")


def test_sqlite_store_is_wal_with_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "events.db"
    store = open_event_store(f"sqlite:///{path}")
    store.append([click("r", "u", "i")])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert len(store) == 1


def test_append_dedupes_by_event_id_and_keeps_full_precision(store: EventStore) -> None:
    late = T0.astimezone(timezone(timedelta(hours=2))) + timedelta(microseconds=1)
    events = [*impressions("r1", "u1", ["a", "b"], "3", "production"), click("r1", "u1", "b", late)]
    assert (store.append(events).written, store.append(events).duplicates) == (3, 3)
    frame = store.read_events()
    assert len(frame) == 3
    assert frame[EVENT_TS].tolist() == [pd.Timestamp(T0)] * 2 + [pd.Timestamp(late)]
    assert str(frame[EVENT_TS].dt.tz) == "UTC"
    assert frame[POSITION].tolist()[:2] == [0, 1] and pd.isna(frame[POSITION].iloc[2])
    assert frame[SEQ_POS].is_monotonic_increasing
    assert frame[REQUEST_ID].tolist() == ["r1"] * 3
    assert frame[MODEL_VERSION].tolist() == ["3", "3", None]
    assert store.read_events(after_seq=int(frame[SEQ_POS].iloc[1]))[EVENT_ID].tolist() == [
        "r1:click:b"
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"event_type": "view"}, "event_type must be one of"),
        ({"event_ts": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"user_id": ""}, "user_id must be a non-empty string"),
        ({"request_id": None}, "needs a request_id"),
        ({"position": -1}, "position must be >= 0"),
        ({"position": "2"}, "position must be an int"),
    ],
)
def test_bad_events_are_refused_with_the_field_named(kwargs: dict, message: str) -> None:
    fields = {
        "event_id": "e",
        "user_id": "u",
        "item_id": "i",
        "event_type": EVENT_CLICK,
        "event_ts": T0,
        "request_id": "r",
    }
    with pytest.raises(DataValidationError, match=message):
        FeedbackEvent(**{**fields, **kwargs})
    with pytest.raises(DataValidationError, match="position and model_version"):
        FeedbackEvent("e", "u", "i", EVENT_IMPRESSION, T0, request_id="r")


def test_bad_store_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="event store must be"):
        open_event_store("mysql://somewhere/db")


def test_clicks_count_for_the_variant_of_their_request(store: EventStore) -> None:
    store.append(impressions("p1", "u1", ["a", "b", "c"], "1", "production"))
    store.append(impressions("p2", "u2", ["a", "d"], "1", "production"))
    store.append(impressions("c1", "u1", ["e", "f"], "2", "canary"))  # u1 moved to the canary
    store.append([click("p1", "u1", "b"), click("c1", "u1", "e"), click("c1", "u1", "f")])
    store.append([click("gone", "u3", "a")])  # its impression was never stored
    counts = store.counts()
    assert counts.arm("production", "1").impressions == 5
    assert counts.arm("production", "1").clicks == 1
    assert counts.arm("canary", "2").impressions == 2
    assert counts.arm("canary", "2").clicks == 2
    assert counts.arm("canary", "2").ctr == 1.0
    assert counts.unmatched_clicks == 1
    assert counts.arm("canary", "9").impressions == 0


def test_a_served_request_is_read_back_from_its_impressions(store: EventStore) -> None:
    # stored out of position order: the answer comes back in the order it was shown
    store.append(impressions("r1", "u1", ["a", "b", "c"], "3", "canary")[::-1])
    store.append([click("r1", "u1", "b")])
    served = store.served_request("r1")
    assert served is not None
    assert (served.user_id, served.items, served.model_version, served.variant) == (
        "u1",
        ("a", "b", "c"),
        "3",
        "canary",
    )
    assert served.position("b") == 1 and served.served_at == T0.timestamp()
    assert store.served_request("never") is None


def test_merge_feedback_appends_after_the_batch_log_once(store: EventStore) -> None:
    store.append([*impressions("r", "u1", ["a"], "1", "production"), click("r", "u1", "a")])
    batch = make_events(["u1", "u2"], ["x", "y"], [T0 - timedelta(days=1)] * 2, seq_pos=[4, 9])
    merged, held = merge_feedback(batch, store.read_events())
    assert held == 0 and len(merged) == 4
    assert merged[SEQ_POS].tolist() == [4, 9, 10, 11]
    assert merged[VARIANT].tolist()[2:] == ["production", "production"]
    again, held = merge_feedback(merged, store.read_events())  # an export merged twice
    assert held == 2 and len(again) == 4


def test_group_commit_acknowledges_every_concurrent_writer(store: EventStore) -> None:
    committed: list[int] = []
    writer = GroupCommitWriter(store, on_commit=lambda events: committed.append(len(events)))
    acks: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        for n in range(100):
            event = click(f"r{w}-{n}", f"u{w}", "i", T0 + timedelta(microseconds=n))
            writer.write([event])
            with lock:
                acks.append(event.event_id)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert len(acks) == 800 and set(store.read_events()[EVENT_ID]) == set(acks)
    assert sum(committed) == 800
    assert len(committed) < 800  # calls were grouped into fewer commits
    with pytest.raises(ConfigError, match="closed"):
        writer.write([click("late", "u", "i")])


def test_a_failed_commit_acknowledges_nothing(store: EventStore) -> None:
    store.close()  # every commit now fails
    writer = GroupCommitWriter(store)
    with pytest.raises(sqlite3.ProgrammingError):
        writer.write([click("r", "u", "i")])
    writer.close()
