"""The row rules of ``mirec.data.rules`` on pandas frames: which rows are bad and why.

``find_bad_rows`` interprets ``RULES`` in order (first reason wins) with one predicate per
``Check`` (``PANDAS_CHECKS``); ``mirec.validation.rules_spark`` is its Spark twin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from mirec.data.events import LoadReport, parse_times
from mirec.data.rules import (
    BAD_TIMESTAMP,
    BEFORE_EPOCH,
    DUPLICATE_EVENT,
    FUTURE_TIMESTAMP,
    INVALID_UTF8_ID,
    INVALID_UTF8_PATTERN,
    NULL_ITEM_ID,
    NULL_USER_ID,
    REASONS,
    RULES,
    UNKNOWN_EVENT_TYPE,
    Check,
    Rule,
    ordered_counts,
)
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

__all__ = [
    "BAD_TIMESTAMP",
    "BEFORE_EPOCH",
    "DUPLICATE_EVENT",
    "FUTURE_TIMESTAMP",
    "INVALID_UTF8_ID",
    "NULL_ITEM_ID",
    "NULL_USER_ID",
    "PANDAS_CHECKS",
    "REASONS",
    "UNKNOWN_EVENT_TYPE",
    "check_bad_fraction",
    "count_reasons",
    "find_bad_rows",
    "split_bad_rows",
    "summarize_report",
]


@dataclass(frozen=True)
class _Rows:
    """What the predicates look at: the rows, their parsed times and the rule settings."""

    events: pd.DataFrame
    ts: pd.Series  # datetime64[ns, UTC], NaT where unparsable or out of range
    seconds: np.ndarray  # float64 unix seconds, NaN only where unparsable
    now: float
    epoch: float
    known_event_types: tuple[str, ...]


def _null_id(rows: _Rows, rule: Rule) -> np.ndarray:
    ids = rows.events[rule.columns[0]]
    return (ids.isna() | (ids.astype(object) == "")).to_numpy()


def _unknown_type(rows: _Rows, rule: Rule) -> np.ndarray:
    if rule.columns[0] not in rows.events.columns:
        return np.zeros(len(rows.events), dtype=bool)
    types = rows.events[rule.columns[0]]
    return (~types.isin(list(rows.known_event_types))).to_numpy()


def _invalid_utf8(rows: _Rows, rule: Rule) -> np.ndarray:
    bad = np.zeros(len(rows.events), dtype=bool)
    for column in rule.columns:
        bad |= _has_invalid_utf8(rows.events[column])
    return bad


def _later_duplicate(rows: _Rows, rule: Rule) -> np.ndarray:
    return _later_duplicates(rows.events, rows.ts)


# One predicate per check: bool [E] for the rows that break the rule.
PANDAS_CHECKS: dict[Check, Callable[[_Rows, Rule], np.ndarray]] = {
    Check.NULL_ID: _null_id,
    Check.AFTER_NOW: lambda rows, rule: rows.seconds > rows.now,
    Check.BEFORE_EPOCH: lambda rows, rule: rows.seconds < rows.epoch,
    Check.UNPARSABLE_TIME: lambda rows, rule: np.isnan(rows.seconds),
    Check.UNKNOWN_TYPE: _unknown_type,
    Check.LATER_DUPLICATE: _later_duplicate,
    Check.INVALID_UTF8: _invalid_utf8,
}


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
    frame = events.reset_index(drop=True)
    ts, seconds = parse_times(frame[EVENT_TS])
    rows = _Rows(
        frame, ts, seconds, _utc(now).timestamp(), _utc(epoch).timestamp(), tuple(known_event_types)
    )
    with np.errstate(invalid="ignore"):
        conditions = [PANDAS_CHECKS[rule.check](rows, rule) for rule in RULES]
    chosen = np.select(conditions, [rule.reason for rule in RULES], default="")
    reasons = pd.Series(chosen, index=events.index, dtype=object)
    reasons[reasons == ""] = None
    return reasons


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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
    return ordered_counts({str(k): int(v) for k, v in bad[REASON].value_counts().items()})


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
