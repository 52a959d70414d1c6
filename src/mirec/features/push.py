"""Fresh user histories from feedback: a click extends the user's online sequence at once.

Interface (the serving feedback path calls it after the clicks are stored)::

    fresh = FreshHistories.from_repo(repo)   # the rendered Feast repo that serving reads
    fresh.push_clicks(clicks)                # canonical events: USER_ID, ITEM_ID, EVENT_TS
    fresh.push_clicks(clicks_missing_from_build(repo, stored_events))  # after a materialization

``push_clicks`` reads the users' online ``user_history`` rows and the clicked items' vocabulary
indices (``item_features``, so items added after the build count too), appends the clicks in
time order, keeps the last ``hist_len`` and writes one row per changed user into the views fed
by the push source ``USER_HISTORY_PUSH`` (what ``FeatureStore.push(..., PushMode.ONLINE)``
writes): the next online lookup of that user returns the new sequence, from any process,
without waiting for the batch pipeline.

Cost. A call is one ``online_read`` of the items, one of the users and one
``online_write_batch`` per pushed view, whatever the number of clicks (one transaction on
SQLite, one pipeline on Redis). The rows go to the provider as protobuf values directly:
``get_online_features`` and ``push`` convert every row through pandas and Arrow and check the
registry, which cost several times the store's own work (``make bench-feedback``). Callers
that receive clicks one at a time group them first (``mirec.serving.feedback.FeastClickPush``).

Timestamps. A history row stamped t holds the events strictly before t, so the pushed row is
stamped one microsecond after its newest click, and always strictly later than the row it
replaces (read with its full-precision timestamp). That matters because the stores differ: Redis
skips a write whose timestamp is older than or equal to the stored one, SQLite keeps the last
write whatever its time. Strictly increasing stamps make both keep the pushed row.

The batch build stays the source of truth: its materialization (stamped with the build time)
replaces pushed rows. Clicks the build did not see (stored after its event log was cut) would
be lost then, so they are pushed again on the new rows; ``clicks_missing_from_build`` finds them
by ``EVENT_ID``. Pushing is idempotent: a click the history already holds (same item index, same
microsecond) is not added twice. Pushes of one user must come from one writer at a time (one
``FreshHistories`` serializes its own calls): two processes that read the same row and push
concurrently keep only one of their clicks until the next build.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mirec.data.events import event_timestamps_us, read_events_parquet
from mirec.errors import ConfigError, DataValidationError, FeatureLookupError
from mirec.features.feast_io import open_serving_store
from mirec.features.repo import read_manifest
from mirec.schema import (
    BEHAVIOUR_EVENT_TYPES,
    DEFAULT_MAX_LEN,
    EVENT_ID,
    EVENT_TS,
    EVENT_TYPE,
    HIST_ITEM_IDS,
    HIST_LEN,
    HIST_TS,
    ITEM_FEATURES_FV,
    ITEM_ID,
    ITEM_IDX,
    NUM_EVENTS,
    USER_HISTORY_FV,
    USER_HISTORY_PUSH,
    USER_ID,
)

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

HISTORY_FEATURES = (HIST_ITEM_IDS, HIST_TS, HIST_LEN, NUM_EVENTS)
_REQUIRED = (USER_ID, ITEM_ID, EVENT_TS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class PushReport:
    """What one ``push_clicks`` did.

    Attributes:
        users: history rows pushed.
        clicks: clicks added to a history.
        already_held: clicks a history held already (re-deliveries, clicks the build saw) or
            older than its whole kept window.
        unknown_items: clicked item ids the online store has no index for (not pushed).
    """

    users: int
    clicks: int
    already_held: int
    unknown_items: list[str] = field(default_factory=list)


@dataclass
class _History:
    """One user's online history: (item index, µs time) pairs, oldest first, and its row time."""

    pairs: list[tuple[int, int]]
    num_events: int
    row_ts_us: int


def _clicks_frame(clicks: pd.DataFrame) -> pd.DataFrame:
    """The clicks with str ids and µs times, in (user, time) order; bad input raises."""
    missing = [c for c in _REQUIRED if c not in clicks.columns]
    if missing:
        raise DataValidationError(f"clicks need columns {missing}; got {list(clicks.columns)}")
    if EVENT_TYPE in clicks.columns:
        other = sorted(set(clicks[EVENT_TYPE]) - set(BEHAVIOUR_EVENT_TYPES))
        if other:
            raise DataValidationError(
                f"only behaviour events {list(BEHAVIOUR_EVENT_TYPES)} extend a history, got {other}"
            )
    if clicks[list(_REQUIRED)].isna().any().any():
        raise DataValidationError("clicks have null user ids, item ids or timestamps")
    frame = pd.DataFrame(
        {
            USER_ID: clicks[USER_ID].astype(str).to_numpy(),
            ITEM_ID: clicks[ITEM_ID].astype(str).to_numpy(),
            "ts_us": event_timestamps_us(clicks),
        }
    )
    return frame.sort_values([USER_ID, "ts_us"], kind="stable").reset_index(drop=True)


def _extend(history: _History, clicks: Sequence[tuple[int, int]], hist_len: int) -> tuple[int, int]:
    """Add ``clicks`` to ``history`` in place; returns (added, already held)."""
    held = set(history.pairs)
    added = 0
    for pair in clicks:
        too_old = len(history.pairs) >= hist_len and pair[1] < history.pairs[0][1]
        if pair in held or too_old:
            continue
        history.pairs.append(pair)
        held.add(pair)
        added += 1
    if added:
        history.pairs.sort(key=lambda p: p[1])  # stable: ties keep their order
        del history.pairs[: max(len(history.pairs) - hist_len, 0)]
        history.num_events += added
        newest = max(ts for _, ts in clicks)
        history.row_ts_us = max(newest, history.row_ts_us) + 1
    return added, len(clicks) - added


class FreshHistories:
    """Pushes clicks into the online ``user_history`` rows of one feature store.

    Args:
        store: the Feast store serving reads (its repo applied, with the push source).
        hist_len: the most items a history keeps (the build's ``hist_len``).
    """

    def __init__(self, store: FeatureStore, hist_len: int = DEFAULT_MAX_LEN) -> None:
        if hist_len < 1:
            raise ConfigError(f"hist_len must be >= 1, got {hist_len}")
        self.store = store
        self.hist_len = hist_len
        self._history_refs = [f"{USER_HISTORY_FV}:{name}" for name in HISTORY_FEATURES]
        self._lock = threading.Lock()
        self._resolved: tuple[Any, Any, list[Any]] | None = None

    @classmethod
    def from_repo(cls, repo: str | Path) -> FreshHistories:
        """Over a built repository, with the ``hist_len`` of its build manifest.

        The store fails fast (``open_serving_store``): pushes run on the request path.
        """
        hist_len = int(read_manifest(repo).get("hist_len", DEFAULT_MAX_LEN))
        return cls(open_serving_store(repo), hist_len=hist_len)

    def push_clicks(self, clicks: pd.DataFrame) -> PushReport:
        """Append each user's clicks to their online history and push the new rows.

        Args:
            clicks: [C] canonical behaviour events (``USER_ID``, ``ITEM_ID``, ``EVENT_TS``;
                ``EVENT_TYPE`` optional, ``click`` or ``interaction``).

        Raises:
            DataValidationError: missing columns, nulls, or impressions among the clicks.
            FeatureLookupError: the online store could not be read or written.
        """
        frame = _clicks_frame(clicks)
        if frame.empty:
            return PushReport(0, 0, 0)
        return self._push_sorted(
            frame[USER_ID].tolist(), frame[ITEM_ID].tolist(), frame["ts_us"].tolist()
        )

    def push_click_rows(self, clicks: Sequence[tuple[str, str, datetime]]) -> PushReport:
        """``push_clicks`` of (user id, item id, timezone-aware time) tuples, without pandas.

        The server's per-request clicks come this way (``FeastClickPush``): building and
        validating a frame costs about as much as the store's own work for a small group.

        Raises:
            DataValidationError: an empty id or a naive time.
            FeatureLookupError: the online store could not be read or written.
        """
        rows = []
        for user, item, at in clicks:
            if not user or not item or not isinstance(at, datetime) or at.utcoffset() is None:
                raise DataValidationError(f"bad click {(user, item, at)!r}")
            rows.append((str(user), (at - _EPOCH) // _US, str(item)))
        rows.sort(key=lambda r: (r[0], r[1]))  # stable: same-µs clicks keep arrival order
        if not rows:
            return PushReport(0, 0, 0)
        return self._push_sorted([r[0] for r in rows], [r[2] for r in rows], [r[1] for r in rows])

    def _push_sorted(self, users: list[str], items: list[str], stamps: list[int]) -> PushReport:
        """Push clicks given in (user, time) order."""
        with self._lock:
            indices = self._item_indices(list(dict.fromkeys(items)))
            unknown = sorted(item for item, idx in indices.items() if idx is None)
            if unknown:
                log.warning("%d clicked items have no vocabulary index: %s", len(unknown), unknown)
            by_user: dict[str, list[tuple[int, int]]] = {}
            for user, item, ts in zip(users, items, stamps, strict=True):
                idx = indices[item]
                if idx is not None:  # (user, time) order: each user's clicks oldest first
                    by_user.setdefault(user, []).append((idx, int(ts)))
            if not by_user:
                return PushReport(0, 0, 0, unknown)
            histories = self._histories(list(by_user))
            changed: list[str] = []
            added = held = 0
            for user, pairs in by_user.items():
                got, already = _extend(histories[user], pairs, self.hist_len)
                added, held = added + got, held + already
                if got:
                    changed.append(user)
            if changed:
                self._push({user: histories[user] for user in changed})
        return PushReport(len(changed), added, held, unknown)

    def _views(self) -> tuple[Any, Any, list[Any]]:
        """(user_history view, item_features view, the views fed by the push source), once."""
        if self._resolved is None:
            from feast.data_source import PushSource

            try:
                views = list(self.store.list_feature_views())
                views += self.store.list_stream_feature_views()
                pushed = [
                    v
                    for v in views
                    if isinstance(v.stream_source, PushSource)
                    and v.stream_source.name == USER_HISTORY_PUSH
                ]
                history = self.store.get_feature_view(USER_HISTORY_FV)
                items = self.store.get_feature_view(ITEM_FEATURES_FV)
            except Exception as exc:
                raise FeatureLookupError(f"feature views of the push not found: {exc}") from exc
            if not pushed:
                raise FeatureLookupError(
                    f"no feature view reads the push source {USER_HISTORY_PUSH}"
                )
            self._resolved = (history, items, pushed)
            self._wal_if_sqlite()
        return self._resolved

    def _wal_if_sqlite(self) -> None:
        """Put a SQLite online store in WAL mode (kept in the file, for every connection).

        In its default rollback-journal mode each push commit syncs the journal and the
        database file, and a reader in another process blocks the writer; WAL syncs one log
        per commit and lets readers and the writer run together.
        """
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        online = getattr(self.store.provider, "online_store", None)
        if isinstance(online, SqliteOnlineStore):
            conn = online._get_conn(self.store.config)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            log.debug("SQLite online store journal mode: %s", mode)

    def _read(self, view: Any, key: str, ids: list[str], features: list[str]) -> list[Any]:
        """One ``online_read`` of ``features`` for ``ids``: [(row time or None, values or None)]."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        keys = [EntityKey(join_keys=[key], entity_values=[Value(string_val=i)]) for i in ids]
        try:
            return list(
                self.store.provider.online_read(
                    self.store.config, view, keys, requested_features=features
                )
            )
        except Exception as exc:  # Feast raises many types; the caller gets one
            raise FeatureLookupError(f"online read of {len(ids)} {key}s failed: {exc}") from exc

    def _item_indices(self, items: list[str]) -> dict[str, int | None]:
        """item id -> vocabulary index from ``item_features`` (None when unknown)."""
        _, view, _ = self._views()
        rows = self._read(view, ITEM_ID, items, [ITEM_IDX])
        out: dict[str, int | None] = {}
        for item, (_, values) in zip(items, rows, strict=True):
            value = None if values is None else values.get(ITEM_IDX)
            out[item] = (
                None if value is None or not value.HasField("int64_val") else value.int64_val
            )
        return out

    def _histories(self, users: list[str]) -> dict[str, _History]:
        """The current online history of each user (empty for a user without a row)."""
        view, _, _ = self._views()
        rows = self._read(view, USER_ID, users, list(HISTORY_FEATURES))
        out = {}
        for user, (row_ts, values) in zip(users, rows, strict=True):
            items = _int64s(values, HIST_ITEM_IDS)
            stamps = _int64s(values, HIST_TS)
            if items is None or stamps is None:
                out[user] = _History([], 0, 0)
                continue
            pairs = list(zip(items, stamps, strict=True))
            total = values.get(NUM_EVENTS) if values else None
            num_events = (
                int(total.int64_val)
                if total is not None and total.HasField("int64_val")
                else len(pairs)
            )
            out[user] = _History(pairs, num_events, _us(row_ts))
        return out

    def _push(self, histories: dict[str, _History]) -> None:
        """One online write per view fed by the push source (one transaction on SQLite)."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Int64List, Value

        _, _, views = self._views()
        created = datetime.now(UTC)
        rows: list[tuple[Any, dict[str, Any], datetime, datetime | None]] = []
        for user, history in histories.items():
            values = {
                HIST_ITEM_IDS: Value(int64_list_val=Int64List(val=[i for i, _ in history.pairs])),
                HIST_TS: Value(int64_list_val=Int64List(val=[t for _, t in history.pairs])),
                HIST_LEN: Value(int64_val=len(history.pairs)),
                NUM_EVENTS: Value(int64_val=history.num_events),
            }
            key = EntityKey(join_keys=[USER_ID], entity_values=[Value(string_val=user)])
            rows.append((key, values, _EPOCH + timedelta(microseconds=history.row_ts_us), created))
        try:
            for view in views:
                self.store.provider.online_write_batch(self.store.config, view, rows, progress=None)
        except Exception as exc:
            raise FeatureLookupError(f"push of {len(rows)} user histories failed: {exc}") from exc
        log.debug("pushed %d user histories", len(rows))


def _int64s(values: dict[str, Any] | None, name: str) -> list[int] | None:
    """An ``Array(Int64)`` online value as a list (None when absent or unset)."""
    value = None if values is None else values.get(name)
    if value is None or not value.HasField("int64_list_val"):
        return None
    return list(value.int64_list_val.val)


def _us(stamp: datetime | None) -> int:
    """A row time as µs since the epoch (0 when absent); naive times are UTC."""
    if stamp is None:
        return 0
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return (stamp - _EPOCH) // _US


def clicks_missing_from_build(repo: str | Path, events: pd.DataFrame) -> pd.DataFrame:
    """The behaviour events of ``events`` whose ``EVENT_ID`` the repo's last build did not read.

    These are what a materialization of that build would lose from the online histories; push
    them again after it (``FreshHistories.push_clicks``).

    Raises:
        ConfigError: the build manifest or its event log is missing.
    """
    path = Path(str(read_manifest(repo).get("events", "")))
    if not path.exists():
        raise ConfigError(f"the event log of the build in {repo} ({path}) is gone")
    built = read_events_parquet(path)
    built_ids = set(built[EVENT_ID].dropna().astype(str)) if EVENT_ID in built.columns else set()
    behaviour = events[events[EVENT_TYPE].isin(BEHAVIOUR_EVENT_TYPES)]
    return behaviour[~behaviour[EVENT_ID].astype(str).isin(built_ids)]
