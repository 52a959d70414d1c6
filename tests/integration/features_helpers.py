"""Reference computations (plain pandas) that the Spark and Feast feature tests compare against."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from mirec.data.events import make_events
from mirec.data.vocab import Vocabulary
from mirec.schema import (
    EVENT_CLICK,
    EVENT_IMPRESSION,
    EVENT_TS,
    EVENT_TYPE,
    HIST_ITEM_IDS,
    ITEM_ID,
    SEQ_POS,
    SPLIT,
    TARGET_ITEM_IDS,
    USER_ID,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def example_counter(frame: pd.DataFrame) -> Counter:
    """Training examples as a multiset of (user, split, history, targets) tuples."""
    return Counter(
        (str(u), s, tuple(int(x) for x in h), tuple(int(x) for x in t))
        for u, s, h, t in zip(
            frame[USER_ID], frame[SPLIT], frame[HIST_ITEM_IDS], frame[TARGET_ITEM_IDS], strict=True
        )
    )


def tied_events() -> pd.DataFrame:
    """A small log with timestamp ties, an impression, out-of-order rows and a 1-event user.

    User "u1": events at t, t, t+1h (tie broken by SEQ_POS), t+1h, t+2h; an impression at t+2h;
    user "u2": a single event; user "10": ties at the very first timestamp.
    """
    h = timedelta(hours=1)
    rows = [  # (user, item, ts, seq_pos, type)
        ("u1", "a", T0 + h, 7, None),
        ("u1", "b", T0, 3, None),
        ("u1", "c", T0, 1, None),
        ("u1", "d", T0 + h, 5, None),
        ("u1", "e", T0 + 2 * h, 9, None),
        ("u1", "x", T0 + 2 * h, 10, EVENT_IMPRESSION),
        ("u1", "a", T0 + 3 * h, 11, EVENT_CLICK),
        ("u2", "b", T0 + h, 2, None),
        ("10", "c", T0, 4, None),
        ("10", "e", T0, 6, None),
        ("10", "d", T0 + 5 * h, 8, None),
    ]
    users, items, ts, pos, types = zip(*rows, strict=True)
    return make_events(
        list(users),
        list(items),
        list(ts),
        seq_pos=list(pos),
        event_type=[t or "interaction" for t in types],
    )


def reference_history(
    events: pd.DataFrame, vocab: Vocabulary, user: str, at: pd.Timestamp, hist_len: int
) -> tuple[list[int], list[int]]:
    """(item indices, µs times) of the last ``hist_len`` behaviour events strictly before ``at``.

    Ties keep ``SEQ_POS`` order.
    """
    rows = events[(events[USER_ID] == user) & (events[EVENT_TS] < at)]
    rows = rows[rows[EVENT_TYPE] != EVENT_IMPRESSION].sort_values([EVENT_TS, SEQ_POS])
    rows = rows.tail(hist_len)
    stamps = rows[EVENT_TS].to_numpy(dtype="datetime64[us]").view(np.int64)
    return vocab.encode(rows[ITEM_ID].to_numpy()).tolist(), stamps.tolist()


def _behaviour_in_order(events: pd.DataFrame, user: str) -> pd.DataFrame:
    rows = events[(events[USER_ID] == user) & (events[EVENT_TYPE] != EVENT_IMPRESSION)]
    rows = rows.sort_values([EVENT_TS, SEQ_POS]).reset_index(drop=True)
    times = rows[EVENT_TS].to_numpy(dtype="datetime64[us]").view(np.int64)
    rank = rows.groupby(EVENT_TS).cumcount().to_numpy()
    return rows.assign(_stamp=times + rank, _time=times)


def reference_before(
    events: pd.DataFrame, vocab: Vocabulary, user: str, seq_pos: int, hist_len: int
) -> tuple[list[int], list[int], int]:
    """(item indices, µs times, stamp µs) of the last ``hist_len`` behaviour events before the
    event ``seq_pos`` in (``EVENT_TS``, ``SEQ_POS``) order; its stamp = time + rank in its tie."""
    rows = _behaviour_in_order(events, user)
    k = int(np.flatnonzero(rows[SEQ_POS].to_numpy() == seq_pos)[0])
    before = rows.iloc[:k].tail(hist_len)
    items = vocab.encode(before[ITEM_ID].to_numpy()).tolist()
    return items, before["_time"].tolist(), int(rows["_stamp"].iloc[k])


def reference_as_of(
    events: pd.DataFrame, vocab: Vocabulary, user: str, at: pd.Timestamp, hist_len: int
) -> list[int]:
    """What a point-in-time read at ``at`` holds: the snapshot of the user's latest event whose
    stamp is at or before ``at`` (the events before it), or [] before the first."""
    rows = _behaviour_in_order(events, user)
    seen = rows[rows["_stamp"] <= at.value // 1000]
    if seen.empty:
        return []
    k = len(seen) - 1
    return vocab.encode(rows.iloc[:k].tail(hist_len)[ITEM_ID].to_numpy()).tolist()
