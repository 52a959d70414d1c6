"""A bad-input event corpus with the expected reason of every row (tests, benchmarks, demos).

Every rule of ``mirec.data.quality`` is broken at least twice, next to legitimate look-alikes
that must survive: a user repeating an item at another time, two events with identical content
but different event ids, and one user with a very long history (10^5 events by default).
Timestamps are raw strings (ISO 8601 and unix seconds), as a raw file delivers them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from mirec.data.quality import (
    BAD_TIMESTAMP,
    BEFORE_EPOCH,
    DUPLICATE_EVENT,
    FUTURE_TIMESTAMP,
    INVALID_UTF8_ID,
    NULL_ITEM_ID,
    NULL_USER_ID,
    UNKNOWN_EVENT_TYPE,
)
from mirec.schema import (
    EVENT_CLICK,
    EVENT_ID,
    EVENT_IMPRESSION,
    EVENT_INTERACTION,
    EVENT_TS,
    EVENT_TYPE,
    ITEM_ID,
    SEQ_POS,
    USER_ID,
)

CORPUS_NOW = datetime(2025, 1, 1, tzinfo=UTC)  # "now" the expected reasons assume
HEAVY_USER = "heavy_user"
_COLUMNS = (USER_ID, ITEM_ID, EVENT_TS, EVENT_TYPE, EVENT_ID)
_T0 = "2020-03-01T10:00:00Z"
_T1 = "2020-03-02T10:00:00Z"

# (user, item, ts, type, event id, expected reason or None), in source order.
_CASES: list[tuple[object, object, object, object, object, str | None]] = [
    ("u1", "i1", _T0, EVENT_INTERACTION, "e1", None),
    ("u1", "i1", _T1, EVENT_INTERACTION, "e2", None),  # repeat of an item: legitimate
    ("u1", "i2", _T0, EVENT_CLICK, None, None),
    ("u2", "i2", _T0, EVENT_CLICK, "e3", None),
    ("u2", "i2", _T0, EVENT_CLICK, "e4", None),  # same content, other event id: both valid
    ("u2", "i3", "2020-03-02 10:00:00+02:00", EVENT_IMPRESSION, None, None),
    ("u3", "i4", "1590000000", EVENT_INTERACTION, None, None),  # unix seconds
    (None, "i1", _T0, EVENT_INTERACTION, None, NULL_USER_ID),
    ("", "i1", _T0, EVENT_INTERACTION, None, NULL_USER_ID),
    (None, None, "2100-01-01", "bogus", None, NULL_USER_ID),  # the first rule wins
    ("u4", None, _T0, EVENT_INTERACTION, None, NULL_ITEM_ID),
    ("u4", "", _T0, EVENT_INTERACTION, None, NULL_ITEM_ID),
    ("u5", "i5", "not a time", EVENT_INTERACTION, None, BAD_TIMESTAMP),
    ("u5", "i5", "", EVENT_INTERACTION, None, BAD_TIMESTAMP),
    ("u5", "i5", None, EVENT_INTERACTION, None, BAD_TIMESTAMP),
    ("u5", "i5", "2020-13-45", EVENT_INTERACTION, None, BAD_TIMESTAMP),
    ("u5", "i6", "3000-01-01", EVENT_INTERACTION, None, FUTURE_TIMESTAMP),  # beyond ns range
    ("u5", "i7", "100000000000", EVENT_INTERACTION, None, FUTURE_TIMESTAMP),  # 5138 in seconds
    ("u5", "i8", "-100000000000", EVENT_INTERACTION, None, BEFORE_EPOCH),  # year -1199
    ("u6", "i6", "2100-01-01T00:00:00Z", EVENT_INTERACTION, None, FUTURE_TIMESTAMP),
    ("u6", "i7", "4102444800", EVENT_CLICK, None, FUTURE_TIMESTAMP),  # 2100 in unix seconds
    ("u7", "i7", "1980-06-01", EVENT_INTERACTION, None, BEFORE_EPOCH),
    ("u7", "i8", "20200101", EVENT_INTERACTION, None, BEFORE_EPOCH),  # 20200101 s = 1970-08
    ("u8", "i8", _T0, "purchase", None, UNKNOWN_EVENT_TYPE),
    ("u8", "i9", _T0, None, None, UNKNOWN_EVENT_TYPE),
    ("u9", "i9", _T1, EVENT_CLICK, "e1", DUPLICATE_EVENT),  # same event id as the first row
    ("u1", "i1", _T0, EVENT_INTERACTION, "e2", DUPLICATE_EVENT),
    ("u1", "i2", _T0, EVENT_CLICK, None, DUPLICATE_EVENT),  # identical row, no event id
    ("u2", "i3", "2020-03-02T08:00:00Z", EVENT_IMPRESSION, None, DUPLICATE_EVENT),  # same time
    ("bad\ufffduser", "i1", _T0, EVENT_INTERACTION, None, INVALID_UTF8_ID),
    ("u1", "item\ufffd", _T0, EVENT_INTERACTION, None, INVALID_UTF8_ID),
    ("u9", "i10", _T0, EVENT_INTERACTION, "e9", None),
]


def bad_event_corpus(heavy_user_events: int = 100_000) -> tuple[pd.DataFrame, pd.Series]:
    """The corpus and the reason each row must get (None for valid rows).

    Args:
        heavy_user_events: valid events of ``HEAVY_USER`` (unix-second strings, 1 s apart).

    Returns:
        (events [E] with string ``EVENT_TS`` and ``SEQ_POS`` = 0..E-1, expected reasons [E]
        aligned with it); judged with ``now = CORPUS_NOW`` and the default epoch.
    """
    rows = [case[:5] for case in _CASES]
    expected: list[str | None] = [case[5] for case in _CASES]
    start = 1_580_000_000  # 2020-01-26
    k = np.arange(heavy_user_events)
    heavy = pd.DataFrame(
        {
            USER_ID: HEAVY_USER,
            ITEM_ID: pd.Series(k % 997).map(lambda j: f"i{j}"),
            EVENT_TS: pd.Series(start + k).astype(str),
            EVENT_TYPE: EVENT_INTERACTION,
            EVENT_ID: None,
        }
    )
    events = pd.concat([pd.DataFrame(rows, columns=list(_COLUMNS)), heavy], ignore_index=True)
    for column in _COLUMNS:
        events[column] = events[column].astype(object).where(events[column].notna(), None)
    events[SEQ_POS] = np.arange(len(events), dtype=np.int64)
    reasons = pd.Series(expected + [None] * heavy_user_events, dtype=object)
    return events, reasons
