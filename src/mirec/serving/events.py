"""The durable store of serving events: impressions and clicks, per variant and model version.

Interface (the entry service calls it from ``POST /recommend`` and ``POST /feedback``)::

    store = open_event_store(url)        # a file path or sqlite:///path (default); postgresql://...
    store.append([FeedbackEvent(...)])   # returns once committed: the acknowledgement
    writer = GroupCommitWriter(store, on_commit=push)  # concurrent callers share one commit
    writer.write([FeedbackEvent(...)])   # blocks until committed; ``push`` runs after the commit
    writer.append([...])                 # the same: a writer is an EventSink (the server's)
    store.counts()                       # impressions and clicks per (variant, model_version)
    store.read_events()                  # every event as a canonical event frame
    merge_feedback(batch_events, store.read_events())  # the next retraining's event log

Events: one row per impression (an item shown at ``position`` in the response ``request_id``
by ``model_version`` of ``variant``) and per click (``request_id`` and ``item_id`` of what was
clicked). ``event_id`` is the dedupe key: appending an event twice (a retried request) stores it
once. Timestamps are kept as integer microseconds since the epoch, UTC (full datetime precision).
A click counts for the variant and model version of its request's impressions (joined by
``request_id``), so a user moved between arms never mixes them; clicks whose request has no
impression are reported as ``unmatched_clicks``, never dropped.

Durability. SQLite runs in WAL mode with ``synchronous=FULL``: every commit syncs the write-ahead
log before it returns, so an acknowledged event survives a killed process and a power loss.
``synchronous=NORMAL`` (WAL) syncs only at checkpoints and may roll back the last commits on a
power loss, which breaks "acknowledged only after written". The cost of one fsync per commit is
paid once per group by ``GroupCommitWriter`` (``make bench-feedback`` measures it). PostgreSQL
commits with ``synchronous_commit=on`` (set for the session). A PostgreSQL URL may carry
``?schema=NAME``: the table lives in that schema (created when missing).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd

from mirec.errors import ConfigError, DataValidationError
from mirec.schema import (
    EVENT_CLICK,
    EVENT_ID,
    EVENT_IMPRESSION,
    EVENT_TS,
    EVENT_TYPE,
    EVENT_TYPES,
    ITEM_ID,
    MODEL_VERSION,
    POSITION,
    REQUEST_ID,
    SEQ_POS,
    USER_ID,
    VARIANT,
)
from mirec.serving.requests_log import ServedRequest

log = logging.getLogger(__name__)

DEFAULT_VARIANT = "production"
TABLE = "feedback_events"
FEEDBACK_COLUMNS = (MODEL_VERSION, VARIANT, REQUEST_ID, POSITION)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_TS_US = "event_ts_us"
_INSERT_COLUMNS = (EVENT_ID, USER_ID, ITEM_ID, EVENT_TYPE, _TS_US, *FEEDBACK_COLUMNS)
_NEEDS_REQUEST = (EVENT_IMPRESSION, EVENT_CLICK)


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One served or clicked item.

    Attributes:
        event_id: dedupe key (an event appended twice is stored once).
        user_id: external user id.
        item_id: external item id.
        event_type: one of ``mirec.schema.EVENT_TYPES`` (``impression``, ``click``, ...).
        event_ts: when it happened; timezone-aware (naive datetimes are refused).
        request_id: the response it belongs to; required for impressions and clicks.
        model_version: the registry version that served it; required for impressions.
        variant: the serving arm (``production`` or ``canary``).
        position: 0-based rank in the response; required for impressions.

    Raises:
        DataValidationError: a field is missing or wrong; the message names it.
    """

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    event_ts: datetime
    request_id: str | None = None
    model_version: str | None = None
    variant: str = DEFAULT_VARIANT
    position: int | None = None

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise DataValidationError(f"feedback event {self.event_id!r}: {problem}")

    def row(self) -> tuple[Any, ...]:
        """The values in ``_INSERT_COLUMNS`` order (timestamp as UTC microseconds)."""
        return (
            self.event_id,
            self.user_id,
            self.item_id,
            self.event_type,
            (self.event_ts - _EPOCH) // _US,
            self.model_version,
            self.variant,
            self.request_id,
            self.position,
        )


def _problem(event: FeedbackEvent) -> str:
    """What is wrong with ``event`` ("" when nothing)."""
    for name in (EVENT_ID, USER_ID, ITEM_ID, VARIANT):
        value = getattr(event, name)
        if not isinstance(value, str) or not value:
            return f"{name} must be a non-empty string, got {value!r}"
    if event.event_type not in EVENT_TYPES:
        return f"event_type must be one of {list(EVENT_TYPES)}, got {event.event_type!r}"
    if not isinstance(event.event_ts, datetime) or event.event_ts.utcoffset() is None:
        return f"event_ts must be a timezone-aware datetime, got {event.event_ts!r}"
    if event.event_type in _NEEDS_REQUEST and not event.request_id:
        return f"a {event.event_type} needs a request_id"
    if event.event_type == EVENT_IMPRESSION and (event.position is None or not event.model_version):
        return "an impression needs its position and model_version"
    if event.position is not None and (
        isinstance(event.position, bool) or not isinstance(event.position, int | np.integer)
    ):
        return f"position must be an int, got {event.position!r}"
    if event.position is not None and event.position < 0:
        return f"position must be >= 0, got {event.position}"
    return ""


@dataclass(frozen=True)
class AppendResult:
    """What one ``append`` committed: new events and re-deliveries of stored ones."""

    written: int
    duplicates: int


@dataclass(frozen=True)
class ArmCounts:
    """Impressions and clicks of one (variant, model version)."""

    variant: str
    model_version: str
    impressions: int
    clicks: int

    @property
    def ctr(self) -> float:
        """Clicks per impression (0 without impressions)."""
        return self.clicks / self.impressions if self.impressions else 0.0


@dataclass(frozen=True)
class FeedbackCounts:
    """Per-arm counts and the clicks whose request has no stored impression."""

    arms: list[ArmCounts] = field(default_factory=list)
    unmatched_clicks: int = 0

    def arm(self, variant: str, model_version: str) -> ArmCounts:
        """The counts of one arm (zeros when it has none)."""
        for counts in self.arms:
            if (counts.variant, counts.model_version) == (variant, model_version):
                return counts
        return ArmCounts(variant, model_version, 0, 0)


class _Backend(Protocol):
    """What differs between SQLite and PostgreSQL: connection, DDL, parameter style."""

    placeholder: str
    description: str

    def transaction(self) -> Any: ...

    def cursor(self) -> Any: ...

    def close(self) -> None: ...


_COLUMNS_DDL = f"""
    {EVENT_ID} TEXT NOT NULL UNIQUE,
    {USER_ID} TEXT NOT NULL,
    {ITEM_ID} TEXT NOT NULL,
    {EVENT_TYPE} TEXT NOT NULL,
    {_TS_US} BIGINT NOT NULL,
    {MODEL_VERSION} TEXT,
    {VARIANT} TEXT NOT NULL,
    {REQUEST_ID} TEXT,
    {POSITION} INTEGER
"""
_INDEX_DDL = f"CREATE INDEX IF NOT EXISTS {TABLE}_request ON {TABLE} ({REQUEST_ID}, {EVENT_TYPE})"


class _SQLite:
    """A SQLite file in WAL mode with ``synchronous=FULL`` (see the module docstring)."""

    placeholder = "?"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.description = f"sqlite:///{path}"
        self.conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            f"(seq INTEGER PRIMARY KEY AUTOINCREMENT, {_COLUMNS_DDL})"
        )
        self.conn.execute(_INDEX_DDL)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def cursor(self) -> sqlite3.Cursor:
        return self.conn.cursor()

    def close(self) -> None:
        self.conn.close()


class _Postgres:
    """A PostgreSQL table, optionally in the schema named by ``?schema=`` in the URL."""

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg import sql

        conninfo, schema = _split_schema(url)
        self.description = urlsplit(conninfo)._replace(netloc=_no_password(url)).geturl()
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute("SET synchronous_commit TO on")
        if schema:
            self.conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
            self.conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            self.description += f" (schema {schema})"
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            f"(seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {_COLUMNS_DDL})"
        )
        self.conn.execute(_INDEX_DDL)

    def transaction(self) -> Any:
        return self.conn.transaction()

    def cursor(self) -> Any:
        return self.conn.cursor()

    def close(self) -> None:
        self.conn.close()


def _split_schema(url: str) -> tuple[str, str]:
    """(the URL without ``schema=``, the schema name or "")."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = "".join(v for k, v in query if k == "schema")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def _no_password(url: str) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return f"{user}{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def open_event_store(url: str | Path) -> EventStore:
    """The event store at ``url``: a file path or ``sqlite:///path``, or ``postgresql://...``.

    Raises:
        ConfigError: another URL scheme, or SQLite without WAL.
    """
    text = str(url)
    scheme = urlsplit(text).scheme
    if scheme in ("postgresql", "postgres"):
        return EventStore(_Postgres(text))
    if scheme == "sqlite":
        return EventStore(_SQLite(Path(text.split("sqlite://", 1)[1].removeprefix("/") or ".")))
    if scheme and len(scheme) > 1:  # "C:" drive letters are paths
        raise ConfigError(
            f"event store must be a path, sqlite:///path or postgresql://, got {text!r}"
        )
    return EventStore(_SQLite(Path(text)))


class EventStore:
    """Append-only feedback events in one table; thread-safe (one connection, one lock)."""

    def __init__(self, backend: _Backend) -> None:
        self._db = backend
        self._lock = threading.Lock()
        columns = ", ".join(_INSERT_COLUMNS)
        marks = ", ".join([backend.placeholder] * len(_INSERT_COLUMNS))
        self._insert = (
            f"INSERT INTO {TABLE} ({columns}) VALUES ({marks}) ON CONFLICT ({EVENT_ID}) DO NOTHING"
        )

    def __repr__(self) -> str:
        return f"EventStore({self._db.description})"

    def append(self, events: Sequence[FeedbackEvent]) -> AppendResult:
        """Store ``events`` in one transaction; returns after the commit (durable)."""
        if not events:
            return AppendResult(0, 0)
        rows = [event.row() for event in events]
        with self._lock, self._db.transaction():
            cursor = self._db.cursor()
            cursor.executemany(self._insert, rows)
            written = max(int(cursor.rowcount), 0)
        if written < len(rows):
            log.info("%d of %d feedback events were stored already", len(rows) - written, len(rows))
        return AppendResult(written, len(rows) - written)

    def _query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute(text.replace("?", self._db.placeholder), tuple(params))
            return list(cursor.fetchall())

    def __len__(self) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM {TABLE}")[0][0])

    def counts(self) -> FeedbackCounts:
        """Impressions and clicks per (variant, model version); clicks by their request."""
        impressions = self._query(
            f"SELECT {VARIANT}, {MODEL_VERSION}, COUNT(*) FROM {TABLE} "
            f"WHERE {EVENT_TYPE} = ? GROUP BY {VARIANT}, {MODEL_VERSION}",
            (EVENT_IMPRESSION,),
        )
        served = (
            f"SELECT DISTINCT {REQUEST_ID}, {VARIANT}, {MODEL_VERSION} FROM {TABLE} "
            f"WHERE {EVENT_TYPE} = ?"
        )
        clicks = self._query(
            f"SELECT s.{VARIANT}, s.{MODEL_VERSION}, COUNT(*) FROM {TABLE} c "
            f"JOIN ({served}) s ON c.{REQUEST_ID} = s.{REQUEST_ID} "
            f"WHERE c.{EVENT_TYPE} = ? GROUP BY s.{VARIANT}, s.{MODEL_VERSION}",
            (EVENT_IMPRESSION, EVENT_CLICK),
        )
        unmatched = self._query(
            f"SELECT COUNT(*) FROM {TABLE} c WHERE c.{EVENT_TYPE} = ? AND NOT EXISTS "
            f"(SELECT 1 FROM {TABLE} s WHERE s.{REQUEST_ID} = c.{REQUEST_ID} "
            f"AND s.{EVENT_TYPE} = ?)",
            (EVENT_CLICK, EVENT_IMPRESSION),
        )
        by_arm = {(str(v), str(m)): [int(n), 0] for v, m, n in impressions}
        for v, m, n in clicks:
            by_arm.setdefault((str(v), str(m)), [0, 0])[1] = int(n)
        arms = [ArmCounts(v, m, i, c) for (v, m), (i, c) in sorted(by_arm.items())]
        return FeedbackCounts(arms, int(unmatched[0][0]))

    def served_request(self, request_id: str) -> ServedRequest | None:
        """The answer ``request_id`` got, from its stored impressions (None when none are).

        Any serving process can tie a click to its impression this way, not only the one that
        answered the request (a ``RequestLog`` holds its own process's answers only).
        """
        rows = self._query(
            f"SELECT {USER_ID}, {ITEM_ID}, {MODEL_VERSION}, {VARIANT}, {_TS_US} FROM {TABLE} "
            f"WHERE {REQUEST_ID} = ? AND {EVENT_TYPE} = ? ORDER BY {POSITION}",
            (request_id, EVENT_IMPRESSION),
        )
        if not rows:
            return None
        user, _, version, variant, ts_us = rows[0]
        items = tuple(str(row[1]) for row in rows)
        return ServedRequest(request_id, str(user), items, str(version), str(variant), ts_us / 1e6)

    def read_events(self, after_seq: int = 0) -> pd.DataFrame:
        """Stored events (those after insertion number ``after_seq``) as canonical events.

        Returns:
            ``USER_ID``, ``ITEM_ID``, ``EVENT_TS`` (UTC), ``EVENT_TYPE``, ``SEQ_POS`` (the
            insertion number), ``EVENT_ID`` and ``FEEDBACK_COLUMNS`` (``POSITION`` as Int64).
        """
        names = (SEQ_POS, *_INSERT_COLUMNS)
        rows = self._query(
            f"SELECT seq, {', '.join(_INSERT_COLUMNS)} FROM {TABLE} WHERE seq > ? ORDER BY seq",
            (after_seq,),
        )
        raw = pd.DataFrame.from_records(rows, columns=list(names))
        return _canonical(raw)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


def _canonical(raw: pd.DataFrame) -> pd.DataFrame:
    """Stored rows -> canonical event columns (+ the feedback columns)."""
    stamps = pd.to_datetime(raw[_TS_US].astype("int64"), unit="us", utc=True)
    frame = pd.DataFrame(
        {
            USER_ID: raw[USER_ID].astype(object),
            ITEM_ID: raw[ITEM_ID].astype(object),
            EVENT_TS: stamps.astype(pd.DatetimeTZDtype(unit="ns", tz="UTC")),
            EVENT_TYPE: raw[EVENT_TYPE].astype(object),
            SEQ_POS: raw[SEQ_POS].astype("int64"),
            EVENT_ID: raw[EVENT_ID].astype(object),
        }
    )
    for column in (MODEL_VERSION, VARIANT, REQUEST_ID):
        frame[column] = raw[column].astype(object).where(raw[column].notna(), None)
    frame[POSITION] = pd.array(raw[POSITION].tolist(), dtype="Int64")
    return frame


def merge_feedback(batch: pd.DataFrame, feedback: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The batch event log with the stored feedback appended after it.

    Feedback rows whose ``EVENT_ID`` the batch already holds (an earlier export merged into
    it) are left out and counted; the others get ``SEQ_POS`` values after the batch's.

    Returns:
        (the merged canonical events, how many feedback rows the batch held already).
    """
    known = set(batch[EVENT_ID].dropna().astype(str)) if EVENT_ID in batch.columns else set()
    fresh = feedback[~feedback[EVENT_ID].astype(str).isin(known)].copy()
    start = int(batch[SEQ_POS].max()) + 1 if len(batch) else 0
    fresh[SEQ_POS] = start + np.arange(len(fresh), dtype=np.int64)
    merged = pd.concat([batch, fresh], ignore_index=True)
    if POSITION in merged.columns:
        merged[POSITION] = merged[POSITION].astype("Int64")
    if len(feedback) > len(fresh):
        log.info("%d feedback events were in the batch log already", len(feedback) - len(fresh))
    return merged, len(feedback) - len(fresh)


@dataclass
class _Pending:
    events: Sequence[FeedbackEvent]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


_STOP = object()


class GroupCommitWriter:
    """Group commit: concurrent ``write`` calls share one transaction (one fsync).

    A background thread takes every waiting call (up to ``max_batch`` events), appends them in
    one transaction and releases the callers. A second thread hands the committed events to
    ``on_commit`` (e.g. the Feast push of clicks), every group committed since its last call at
    once, so a slow push never delays the next commit. A failed commit fails every call of its
    group (nothing is acknowledged); a failing ``on_commit`` is logged with the number of events
    it missed.

    Args:
        store: the event store.
        max_batch: the most events one transaction takes.
        on_commit: called with each committed group, after its callers are released.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        max_batch: int = 4096,
        on_commit: Callable[[list[FeedbackEvent]], object] | None = None,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.on_commit = on_commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._committed: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="feedback-writer", daemon=True)
        self._notifier = threading.Thread(target=self._notify, name="feedback-push", daemon=True)
        self._closed = False
        self.commits = 0  # transactions committed (one per group)
        self._thread.start()
        self._notifier.start()

    def write(self, events: Sequence[FeedbackEvent], timeout: float = 30.0) -> None:
        """Append ``events``; returns once they are committed.

        Raises:
            TimeoutError: not committed within ``timeout`` seconds (they may still be later).
            ConfigError: the writer is closed.
            Exception: the commit's own error (nothing of the group was stored).
        """
        if self._closed:
            raise ConfigError("the feedback writer is closed")
        pending = _Pending(events)
        self._queue.put(pending)
        if not pending.done.wait(timeout):
            raise TimeoutError(f"{len(events)} feedback events not committed in {timeout} s")
        if pending.error is not None:
            raise pending.error

    def append(self, events: Sequence[FeedbackEvent]) -> None:
        """``write``: the ``EventSink`` of the feedback handler (returns once committed)."""
        self.write(events)

    def served_request(self, request_id: str) -> ServedRequest | None:
        """The store's ``served_request`` (committed impressions only)."""
        return self.store.served_request(request_id)

    def read_events(self, after_seq: int = 0) -> pd.DataFrame:
        """The store's ``read_events`` (committed events only)."""
        return self.store.read_events(after_seq)

    def counts(self) -> FeedbackCounts:
        """The store's ``counts`` (committed events only)."""
        return self.store.counts()

    def __len__(self) -> int:
        return len(self.store)

    def __repr__(self) -> str:
        return f"GroupCommitWriter({self.store!r})"

    def close(self) -> None:
        """Commit what is queued, run ``on_commit`` for it, then stop the threads."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()
            self._committed.put(_STOP)
            self._notifier.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            group, stop = _take(self._queue, self.max_batch, lambda p: len(p.events))
            if group:
                self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        events = [event for pending in group for event in pending.events]
        try:
            self.store.append(events)
        except Exception as exc:
            log.exception("commit of %d feedback events failed; none acknowledged", len(events))
            for pending in group:
                pending.error = exc
                pending.done.set()
            return
        self.commits += 1
        for pending in group:
            pending.done.set()
        if self.on_commit is not None:
            self._committed.put(events)

    def _notify(self) -> None:
        stop = False
        while not stop:  # everything committed meanwhile goes into one call
            groups, stop = _take(self._committed, None, len)
            events = [event for group in groups for event in group]
            if not events or self.on_commit is None:
                continue
            try:
                self.on_commit(events)
            except Exception:
                log.exception("on_commit failed for %d committed feedback events", len(events))


def _take(
    source: queue.SimpleQueue[Any], limit: int | None, size: Callable[[Any], int]
) -> tuple[list[Any], bool]:
    """One blocking get, then whatever else is queued (up to ``limit`` in ``size`` units).

    Returns:
        (the items, whether the stop mark was met).
    """
    first = source.get()
    if first is _STOP:
        return [], True
    items, total = [first], size(first)
    while limit is None or total < limit:
        try:
            item = source.get_nowait()
        except queue.Empty:
            break
        if item is _STOP:
            return items, True
        items.append(item)
        total += size(item)
    return items, False
