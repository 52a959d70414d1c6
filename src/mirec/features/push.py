"""Fresh user histories from feedback: a click extends the user's online sequence at once.

Interface (the serving feedback path calls it after the clicks are stored)::

    fresh = FreshHistories.from_repo(repo)   # the rendered Feast repo that serving reads
    fresh.push_clicks(clicks)                # canonical events: USER_ID, ITEM_ID, EVENT_TS
    fresh.push_clicks(clicks_missing_from_build(repo, stored_events))  # after a materialization

``push_clicks`` reads the users' online ``user_history`` rows and the clicked items' vocabulary
indices (``item_features``, so items added after the build count too), appends the clicks in
time order, keeps the last ``hist_len`` and pushes one row per user through the push source
``USER_HISTORY_PUSH`` (``PushMode.ONLINE``): the next online lookup of that user returns the new
sequence, from any process, without waiting for the batch pipeline.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mirec.data.events import event_timestamps_us, read_events_parquet
from mirec.errors import ConfigError, DataValidationError, FeatureLookupError
from mirec.features.feast_io import open_store
from mirec.features.repo import read_manifest
from mirec.schema import (
    BEHAVIOUR_EVENT_TYPES,
    DEFAULT_MAX_LEN,
    EVENT_ID,
    EVENT_TS,
    EVENT_TYPE,
    FEAST_CREATED_TS,
    FEAST_TS,
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


def _row_ts_us(response: Any, column: int, row: int) -> int:
    """The full-precision event timestamp (µs) of one online value (0 when absent)."""
    stamp = response.proto.results[column].event_timestamps[row]
    return int(stamp.seconds) * 1_000_000 + int(stamp.nanos) // 1000


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

    @classmethod
    def from_repo(cls, repo: str | Path) -> FreshHistories:
        """Over a built repository, with the ``hist_len`` of its build manifest."""
        hist_len = int(read_manifest(repo).get("hist_len", DEFAULT_MAX_LEN))
        return cls(open_store(repo), hist_len=hist_len)

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
        with self._lock:
            indices = self._item_indices(pd.unique(frame[ITEM_ID]).tolist())
            unknown = sorted(item for item, idx in indices.items() if idx is None)
            if unknown:
                log.warning("%d clicked items have no vocabulary index: %s", len(unknown), unknown)
            frame = frame[~frame[ITEM_ID].isin(unknown)]
            if frame.empty:
                return PushReport(0, 0, 0, unknown)
            histories = self._histories(pd.unique(frame[USER_ID]).tolist())
            changed, added, held = self._apply(frame, indices, histories)
            if changed:
                self._push({user: histories[user] for user in changed})
        return PushReport(len(changed), added, held, unknown)

    def _apply(
        self,
        frame: pd.DataFrame,
        indices: dict[str, int | None],
        histories: dict[str, _History],
    ) -> tuple[list[str], int, int]:
        changed: list[str] = []
        added = held = 0
        for user, rows in frame.groupby(USER_ID, sort=False):
            items, stamps = rows[ITEM_ID].tolist(), rows["ts_us"].tolist()
            pairs = [(int(indices[i] or 0), int(t)) for i, t in zip(items, stamps, strict=True)]
            got, already = _extend(histories[str(user)], pairs, self.hist_len)
            added, held = added + got, held + already
            if got:
                changed.append(str(user))
        return changed, added, held

    def _online(self, refs: list[str], key: str, ids: list[str]) -> Any:
        try:
            return self.store.get_online_features(features=refs, entity_rows={key: ids})
        except Exception as exc:  # Feast raises many types; the caller gets one
            raise FeatureLookupError(f"online lookup of {len(ids)} {key}s failed: {exc}") from exc

    def _item_indices(self, items: list[str]) -> dict[str, int | None]:
        """item id -> vocabulary index from ``item_features`` (None when unknown)."""
        ref = f"{ITEM_FEATURES_FV}:{ITEM_IDX}"
        values = self._online([ref], ITEM_ID, items).to_dict()[ITEM_IDX]
        return {item: None if v is None else int(v) for item, v in zip(items, values, strict=True)}

    def _histories(self, users: list[str]) -> dict[str, _History]:
        """The current online history of each user (empty for a user without a row)."""
        response = self._online(self._history_refs, USER_ID, users)
        values = response.to_dict()
        column = list(response.proto.metadata.feature_names.val).index(HIST_ITEM_IDS)
        out = {}
        for row, user in enumerate(users):
            items, stamps = values[HIST_ITEM_IDS][row], values[HIST_TS][row]
            if items is None or stamps is None:
                out[user] = _History([], 0, 0)
                continue
            pairs = [(int(i), int(t)) for i, t in zip(items, stamps, strict=True)]
            num_events = values[NUM_EVENTS][row]
            total = len(pairs) if num_events is None else int(num_events)
            out[user] = _History(pairs, total, _row_ts_us(response, column, row))
        return out

    def _push(self, histories: dict[str, _History]) -> None:
        from feast.data_source import PushMode

        users = list(histories)
        stamps = [histories[u].row_ts_us for u in users]
        rows = pd.DataFrame(
            {
                USER_ID: users,
                HIST_ITEM_IDS: [[i for i, _ in histories[u].pairs] for u in users],
                HIST_TS: [[t for _, t in histories[u].pairs] for u in users],
                HIST_LEN: np.asarray([len(histories[u].pairs) for u in users], dtype=np.int64),
                NUM_EVENTS: np.asarray([histories[u].num_events for u in users], dtype=np.int64),
                FEAST_TS: pd.to_datetime(np.asarray(stamps, dtype=np.int64), unit="us", utc=True),
            }
        )
        rows[FEAST_CREATED_TS] = datetime.now(UTC)
        try:
            self.store.push(USER_HISTORY_PUSH, rows, to=PushMode.ONLINE)
        except Exception as exc:
            raise FeatureLookupError(f"push of {len(rows)} user histories failed: {exc}") from exc
        log.debug("pushed %d user histories", len(rows))


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
