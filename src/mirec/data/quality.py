"""Row rules of the event contract: which rows are bad and why (the Spark / GX checks mirror these).

A row gets the FIRST reason that applies, in this order:

1. ``null_user_id``: ``USER_ID`` is null or the empty string.
2. ``null_item_id``: ``ITEM_ID`` is null or the empty string.
3. ``bad_timestamp``: ``EVENT_TS`` is null (NaT) or cannot be parsed.
4. ``future_timestamp``: ``EVENT_TS > now``.
5. ``before_epoch``: ``EVENT_TS < epoch``.
6. ``unknown_event_type``: ``EVENT_TYPE`` (when the column exists) is null or not a known type.
7. ``duplicate_event``: a later copy of the same event. The key is ``EVENT_ID`` where that column
   exists and is non-null, else the whole (user, item, ts, type) row. The FIRST copy in
   (``SEQ_POS``, row order) is kept and later copies are flagged (in Spark:
   ``row_number() over (partition by key order by seq_pos) > 1``).
8. ``invalid_utf8_id``: a user or item id contains U+FFFD (the replacement character that
   undecodable bytes become) or a lone surrogate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from mirec.data.events import LoadReport, to_utc_timestamps
from mirec.errors import DataValidationError
from mirec.schema import (
    EVENT_ID,
    EVENT_TS,
    EVENT_TYPE,
    EVENT_TYPES,
    ITEM_ID,
    REASON,
    SEQ_POS,
    SOURCE_LINE,
    USER_ID,
)

NULL_USER_ID = "null_user_id"
NULL_ITEM_ID = "null_item_id"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
BEFORE_EPOCH = "before_epoch"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
DUPLICATE_EVENT = "duplicate_event"
INVALID_UTF8_ID = "invalid_utf8_id"
# The reasons in priority order: the first that applies wins.
REASONS = (
    NULL_USER_ID,
    NULL_ITEM_ID,
    BAD_TIMESTAMP,
    FUTURE_TIMESTAMP,
    BEFORE_EPOCH,
    UNKNOWN_EVENT_TYPE,
    DUPLICATE_EVENT,
    INVALID_UTF8_ID,
)
INVALID_UTF8_PATTERN = "[\ufffd\ud800-\udfff]"


def find_bad_rows(
    events: pd.DataFrame,
    *,
    now: datetime,
    epoch: datetime,
    known_event_types: Iterable[str] = EVENT_TYPES,
) -> pd.Series:
    """Give every row the first reason it breaks the contract, or None when it is clean.

    Args:
        events: [E] event rows (canonical columns; ``EVENT_TS`` may still be raw values).
        now: rows later than this are ``future_timestamp`` (naive = UTC).
        epoch: rows earlier than this are ``before_epoch`` (naive = UTC).
        known_event_types: the accepted ``EVENT_TYPE`` values.

    Returns:
        object Series [E] aligned with ``events.index``: a reason string or None.
    """
    if events.empty:
        return pd.Series([], index=events.index, dtype=object)
    ts = to_utc_timestamps(events[EVENT_TS].reset_index(drop=True))
    if EVENT_TYPE in events.columns:
        types = events[EVENT_TYPE].reset_index(drop=True)
        bad_type = (~types.isin(list(known_event_types))).to_numpy()
    else:
        bad_type = np.zeros(len(events), dtype=bool)
    conditions = [
        _is_null_id(events[USER_ID]),
        _is_null_id(events[ITEM_ID]),
        ts.isna().to_numpy(),
        (ts > pd.Timestamp(_utc(now))).to_numpy(),
        (ts < pd.Timestamp(_utc(epoch))).to_numpy(),
        bad_type,
        _later_duplicates(events, ts),
        _has_invalid_utf8(events[USER_ID]) | _has_invalid_utf8(events[ITEM_ID]),
    ]
    chosen = np.select(conditions, list(REASONS), default="")
    reasons = pd.Series(chosen, index=events.index, dtype=object)
    reasons[reasons == ""] = None
    return reasons


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _is_null_id(ids: pd.Series) -> np.ndarray:
    return (ids.isna() | (ids.astype(object) == "")).to_numpy()


def _has_invalid_utf8(ids: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(ids.astype(object))  # check each distinct id once
    found = pd.Series(uniques, dtype=object).str.contains(INVALID_UTF8_PATTERN, na=False)
    bad = np.append(found.fillna(False).to_numpy(dtype=bool), False)  # code -1 (null) -> False
    return bad[codes]


def _later_duplicates(events: pd.DataFrame, ts: pd.Series) -> np.ndarray:
    """bool [E]: True for every copy of an event after the first in (SEQ_POS, row order)."""
    n = len(events)
    seq_pos = events[SEQ_POS].to_numpy() if SEQ_POS in events.columns else np.arange(n)
    order = np.lexsort((np.arange(n), seq_pos))
    keys = pd.DataFrame(
        {
            USER_ID: events[USER_ID].to_numpy(dtype=object),
            ITEM_ID: events[ITEM_ID].to_numpy(dtype=object),
            EVENT_TS: ts.array.asi8,
            EVENT_TYPE: events[EVENT_TYPE].to_numpy(dtype=object)
            if EVENT_TYPE in events.columns
            else None,
        }
    ).iloc[order]
    if EVENT_ID in events.columns:
        event_id = events[EVENT_ID].to_numpy(dtype=object)[order]
        has_id = pd.notna(event_id)
    else:
        event_id, has_id = None, np.zeros(n, dtype=bool)
    dup_sorted = np.zeros(n, dtype=bool)
    content = ~has_id
    if content.any():
        dup_sorted[content] = keys[content].duplicated(keep="first").to_numpy()
    if has_id.any() and event_id is not None:
        dup_sorted[has_id] = pd.Series(event_id[has_id]).duplicated(keep="first").to_numpy()
    out = np.zeros(n, dtype=bool)
    out[order] = dup_sorted
    return out


def split_bad_rows(
    events: pd.DataFrame,
    reasons: pd.Series,
    source_lines: np.ndarray | Sequence[int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Separate clean rows from bad ones.

    Args:
        events: [E] event rows.
        reasons: [E] output of ``find_bad_rows`` (aligned with ``events``).
        source_lines: optional int [E] 1-based source lines, added to the bad rows as
            ``SOURCE_LINE``.

    Returns:
        (clean [E_ok] rows, bad [E_bad] rows with ``REASON`` (and ``SOURCE_LINE``)); both with a
        fresh RangeIndex.
    """
    is_bad = reasons.notna().to_numpy()
    clean = events.loc[~is_bad].reset_index(drop=True)
    bad = events.loc[is_bad].reset_index(drop=True)
    bad[REASON] = reasons.to_numpy(dtype=object)[is_bad]
    if source_lines is not None:
        bad[SOURCE_LINE] = np.asarray(source_lines, dtype=np.int64)[is_bad]
    return clean, bad


def count_reasons(bad: pd.DataFrame) -> dict[str, int]:
    """reason -> count over a bad-rows frame, in priority order."""
    if bad.empty:
        return {}
    counts = bad[REASON].value_counts()
    ordered = [r for r in REASONS if r in counts.index] + sorted(
        r for r in counts.index if r not in REASONS
    )
    return {reason: int(counts[reason]) for reason in ordered}


def summarize_report(report: LoadReport, max_lines: int = 5) -> str:
    """One readable line: source, bad count and share, counts per reason, first bad lines."""
    bad = report.rows_read - report.rows_kept
    parts = ", ".join(f"{reason}={count}" for reason, count in report.bad_by_reason.items())
    text = (
        f"{report.source}: {bad} of {report.rows_read} rows set aside "
        f"({report.bad_fraction:.2%})" + (f": {parts}" if parts else "")
    )
    if bad and SOURCE_LINE in report.bad_rows.columns:
        lines = report.bad_rows[SOURCE_LINE].head(max_lines).tolist()
        text += f"; first bad lines: {', '.join(str(x) for x in lines)}"
    return text


def check_bad_fraction(report: LoadReport, max_bad_fraction: float) -> None:
    """Fail when the share of bad rows is above the tolerance.

    Raises:
        DataValidationError: ``report.bad_fraction > max_bad_fraction``; the message names the
            source, the counts per reason and the first bad lines.
    """
    if report.bad_fraction > max_bad_fraction:
        raise DataValidationError(
            f"{summarize_report(report)}; more than max_bad_fraction={max_bad_fraction:.2%}"
        )
