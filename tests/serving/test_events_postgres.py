"""The feedback event store on the real PostgreSQL (a fresh schema per run, dropped after)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from mirec.schema import EVENT_ID, EVENT_TS, POSITION, SEQ_POS
from mirec.serving.events import GroupCommitWriter, open_event_store
from tests.serving.test_events_store import T0, click, impressions

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def url() -> Iterator[str]:
    import psycopg

    schema = f"mirec_events_{uuid.uuid4().hex[:10]}"
    yield f"{SERVER}?schema={schema}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        left = conn.execute(
            "select count(*) from information_schema.schemata where schema_name = %s", (schema,)
        ).fetchone()
    assert left is not None and left[0] == 0


def test_postgresql_round_trip(url: str) -> None:
    store = open_event_store(url)
    assert "schema mirec_events_" in repr(store) and "postgres@127.0.0.1" in repr(store)
    events = [
        *impressions("p1", "u1", ["a", "b"], "1", "production"),
        *impressions("c1", "u2", ["a"], "2", "canary"),
        click("p1", "u1", "b", T0 + timedelta(microseconds=3)),
        click("c1", "u2", "a"),
        click("nowhere", "u2", "a"),
    ]
    assert store.append(events).written == 6
    assert store.append(events[:2]).duplicates == 2
    writer = GroupCommitWriter(store)
    writer.write([click("c1", "u2", "x")])
    writer.close()
    store.close()

    reopened = open_event_store(url)  # a new connection sees every committed event
    frame = reopened.read_events()
    assert frame[EVENT_ID].tolist() == [e.event_id for e in events] + ["c1:click:x"]
    assert frame[SEQ_POS].is_monotonic_increasing
    assert frame[EVENT_TS].iloc[3] == T0 + timedelta(microseconds=3)  # full precision
    assert frame[POSITION].tolist()[:3] == [0, 1, 0]
    counts = reopened.counts()
    assert (counts.arm("production", "1").impressions, counts.arm("production", "1").clicks) == (
        2,
        1,
    )
    assert (counts.arm("canary", "2").impressions, counts.arm("canary", "2").clicks) == (1, 2)
    assert counts.unmatched_clicks == 1
    assert len(reopened) == 7
