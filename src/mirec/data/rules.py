"""The event row rules, once: reason names, their order and what each checks.

Both quarantines interpret this table: pandas in ``mirec.data.quality`` and Spark in
``mirec.validation.rules_spark``; each maps every ``Check`` to one predicate (a unit test checks
that both cover every check). A row gets the FIRST reason that applies, in ``RULES`` order:

1. ``null_user_id``: ``USER_ID`` is null or the empty string.
2. ``null_item_id``: ``ITEM_ID`` is null or the empty string.
3. ``future_timestamp``: the time is later than ``now``, however far (a unix timestamp in the
   year 5138 is future, not unparsable: this rule runs before ``bad_timestamp``).
4. ``before_epoch``: the time is earlier than the epoch.
5. ``bad_timestamp``: the time is null or cannot be parsed.
6. ``unknown_event_type``: ``EVENT_TYPE`` (when the column exists) is null or not a known type.
7. ``duplicate_event``: a later copy of the same event. The key is ``EVENT_ID`` where that
   column exists and is non-null, else the whole (user, item, ts, type) row; the FIRST copy in
   (``SEQ_POS``, row order) is kept.
8. ``invalid_utf8_id``: a user or item id holds U+FFFD (what undecodable bytes become) or a
   lone surrogate.

Rows a format loader could not parse at all (a CSV line with the wrong number of fields) never
reach these rules; they are quarantined by the loader with ``LOADER_REASONS``.

Times: numbers and numeric strings are unix seconds, or unix milliseconds when more than half
of a column's numbers are at least ``MILLIS_THRESHOLD`` (as seconds, after the year 5138);
other strings are ISO 8601 (naive = UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mirec.schema import EVENT_ID, EVENT_TS, EVENT_TYPE, ITEM_ID, SEQ_POS, USER_ID

NULL_USER_ID = "null_user_id"
NULL_ITEM_ID = "null_item_id"
FUTURE_TIMESTAMP = "future_timestamp"
BEFORE_EPOCH = "before_epoch"
BAD_TIMESTAMP = "bad_timestamp"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
DUPLICATE_EVENT = "duplicate_event"
INVALID_UTF8_ID = "invalid_utf8_id"
MALFORMED_LINE = "malformed_line"  # loader: a line with the wrong number of fields

MILLIS_THRESHOLD = 1e11  # |unix value| >= this (as seconds: after 5138) reads as milliseconds
INVALID_UTF8_PATTERN = "[\ufffd\ud800-\udfff]"  # the same class in Java regex syntax for Spark


class Check(Enum):
    """What a rule tests; each back-end implements every member once."""

    NULL_ID = "null_id"  # the column is null or ""
    AFTER_NOW = "after_now"  # the parsed time (unbounded range) is later than now
    BEFORE_EPOCH = "before_epoch"  # the parsed time is earlier than the epoch
    UNPARSABLE_TIME = "unparsable_time"  # the time is null or not a time
    UNKNOWN_TYPE = "unknown_type"  # the column exists and is null or not a known type
    LATER_DUPLICATE = "later_duplicate"  # a copy after the first of the same event
    INVALID_UTF8 = "invalid_utf8"  # one of the columns holds U+FFFD or a lone surrogate


@dataclass(frozen=True)
class Rule:
    """One row rule: the reason it gives, what it checks and on which columns."""

    reason: str
    check: Check
    columns: tuple[str, ...]


RULES: tuple[Rule, ...] = (
    Rule(NULL_USER_ID, Check.NULL_ID, (USER_ID,)),
    Rule(NULL_ITEM_ID, Check.NULL_ID, (ITEM_ID,)),
    Rule(FUTURE_TIMESTAMP, Check.AFTER_NOW, (EVENT_TS,)),
    Rule(BEFORE_EPOCH, Check.BEFORE_EPOCH, (EVENT_TS,)),
    Rule(BAD_TIMESTAMP, Check.UNPARSABLE_TIME, (EVENT_TS,)),
    Rule(UNKNOWN_EVENT_TYPE, Check.UNKNOWN_TYPE, (EVENT_TYPE,)),
    Rule(DUPLICATE_EVENT, Check.LATER_DUPLICATE, (EVENT_ID, USER_ID, ITEM_ID, EVENT_TS, SEQ_POS)),
    Rule(INVALID_UTF8_ID, Check.INVALID_UTF8, (USER_ID, ITEM_ID)),
)
LOADER_REASONS: tuple[str, ...] = (MALFORMED_LINE,)
# Every reason in report order: loader rejects first, then the rules in priority order.
REASONS: tuple[str, ...] = LOADER_REASONS + tuple(rule.reason for rule in RULES)


def ordered_counts(counts: dict[str, int]) -> dict[str, int]:
    """reason -> count without zeros, in ``REASONS`` order (unknown reasons last, sorted)."""
    known = [r for r in REASONS if counts.get(r)]
    rest = sorted(r for r in counts if r not in REASONS and counts[r])
    return {r: int(counts[r]) for r in known + rest}
