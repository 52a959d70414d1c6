"""The row rules of ``mirec.data.rules`` as Spark column expressions (same reasons, same order).

``annotate_bad_rows_spark`` interprets ``RULES`` with one predicate per ``Check``
(``SPARK_CHECKS``), adding the ``REASON`` column (null for clean rows) and the parsed UTC
timestamp; a row gets the FIRST reason that applies, exactly as ``find_bad_rows`` does in pandas.

Timestamps are parsed like ``mirec.data.events.parse_times``: numbers and numeric strings are
unix seconds (milliseconds when most numbers of the column are, the same count as pandas),
other strings ISO 8601 (naive = the session time zone, which must be UTC, as every mirec
session sets it). Times outside pandas' nanosecond range (years ~1678..2261) are compared with
``now`` and the epoch as they are, and only the clean rows' parsed column is kept. Ids that
were not valid UTF-8 reach Spark as strings holding U+FFFD.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

from mirec.data.rules import INVALID_UTF8_PATTERN, MILLIS_THRESHOLD, RULES, Check, Rule
from mirec.schema import (
    EVENT_ID,
    EVENT_TS,
    EVENT_TYPE,
    EVENT_TYPES,
    ITEM_ID,
    REASON,
    SEQ_POS,
    USER_ID,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import DataType

logger = logging.getLogger(__name__)

PARSED_TS = "__mirec_parsed_ts"  # helper column: EVENT_TS parsed to a UTC timestamp
TS_SECONDS = "__mirec_ts_seconds"  # helper column: EVENT_TS as unix seconds (unbounded range)
ROW_ORDER = "__mirec_row_order"  # helper column: input order, the tie-break among duplicates
HELPER_COLUMNS = (PARSED_TS, TS_SECONDS, ROW_ORDER)
# Java regex with the class of INVALID_UTF8_PATTERN: U+FFFD or a lone surrogate.
INVALID_UTF8_JAVA_REGEX = INVALID_UTF8_PATTERN.encode("unicode_escape").decode("ascii")
MAX_ABS_UNIX_SECONDS = 9.2e9  # the bound ``to_utc_timestamps`` applies to numbers
MIN_PANDAS_TS = pd.Timestamp.min.tz_localize(UTC).ceil("us").to_pydatetime()
MAX_PANDAS_TS = pd.Timestamp.max.tz_localize(UTC).floor("us").to_pydatetime()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _numeric(column: Column, data_type: DataType) -> Column:
    """The column as a double where it is a number or numeric string, else null."""
    from pyspark.sql import types as T

    if isinstance(data_type, T.NumericType):
        return column.cast("double")
    return column.cast("string").try_cast("double")


def unix_scale(df: DataFrame) -> float:
    """1.0 (seconds) or 1e-3 (milliseconds) for ``df[EVENT_TS]``, decided as pandas does."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    data_type = df.schema[EVENT_TS].dataType
    if isinstance(data_type, T.TimestampType | T.TimestampNTZType | T.DateType):
        return 1.0
    number = _numeric(F.col(EVENT_TS), data_type)
    finite = number.isNotNull() & ~F.isnan(number) & (F.abs(number) < F.lit(float("inf")))
    row = df.agg(
        F.count(F.when(finite, 1)).alias("finite"),
        F.count(F.when(finite & (F.abs(number) >= F.lit(MILLIS_THRESHOLD)), 1)).alias("large"),
    ).first()
    finite_n, large_n = (int(row["finite"]), int(row["large"])) if row else (0, 0)
    return 1e-3 if finite_n and 2 * large_n > finite_n else 1.0


def time_seconds_spark(column: Column, data_type: DataType, scale: float = 1.0) -> Column:
    """Raw times -> double unix seconds (unbounded range; null only where unparsable).

    Args:
        column: the raw values.
        data_type: their Spark type (timestamp, date, numeric or string).
        scale: multiplies numbers (``unix_scale``: 1e-3 for a milliseconds column).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if isinstance(data_type, T.TimestampType | T.TimestampNTZType | T.DateType):
        return F.unix_micros(column.cast("timestamp")).cast("double") / F.lit(1e6)
    number = _numeric(column, data_type)
    finite = ~F.isnan(number) & (F.abs(number) < F.lit(float("inf")))
    seconds = F.when(finite, number * F.lit(scale))
    if isinstance(data_type, T.NumericType):
        return seconds
    iso = F.unix_micros(column.cast("string").try_cast("timestamp")).cast("double") / F.lit(1e6)
    return F.when(number.isNotNull(), seconds).otherwise(iso)


def parse_timestamps_spark(column: Column, data_type: DataType) -> Column:
    """Parse a raw timestamp column (numbers as unix seconds) to a UTC timestamp.

    Args:
        column: the raw values.
        data_type: their Spark type (timestamp, date, numeric or string).

    Returns:
        A timestamp column: unparsable or out-of-range values are null.
    """
    return _timestamp_of(time_seconds_spark(column, data_type))


def _timestamp_of(seconds: Column) -> Column:
    """Double unix seconds -> a UTC timestamp; null outside pandas' nanosecond range."""
    from pyspark.sql import functions as F

    ok = F.abs(seconds) < F.lit(MAX_ABS_UNIX_SECONDS)
    parsed = F.when(ok, F.timestamp_micros(F.round(seconds * F.lit(1_000_000.0)).cast("long")))
    in_range = (parsed >= F.lit(MIN_PANDAS_TS)) & (parsed <= F.lit(MAX_PANDAS_TS))
    return F.when(in_range, parsed)


@dataclass(frozen=True)
class _Frame:
    """What the Spark predicates look at: the annotated frame and the rule settings."""

    df: DataFrame
    now: datetime
    epoch: datetime
    known_event_types: tuple[str, ...]


def _null_id(frame: _Frame, rule: Rule) -> Column:
    from pyspark.sql import functions as F

    text = F.col(rule.columns[0]).cast("string")
    return text.isNull() | (text == F.lit(""))


def _unknown_type(frame: _Frame, rule: Rule) -> Column:
    from pyspark.sql import functions as F

    if rule.columns[0] not in frame.df.columns:
        return F.lit(False)
    known = F.col(rule.columns[0]).isin(list(frame.known_event_types))
    return ~F.coalesce(known, F.lit(False))


def _invalid_utf8(frame: _Frame, rule: Rule) -> Column:
    from pyspark.sql import functions as F

    found = [
        F.coalesce(F.col(c).cast("string").rlike(INVALID_UTF8_JAVA_REGEX), F.lit(False))
        for c in rule.columns
    ]
    out = found[0]
    for more in found[1:]:
        out = out | more
    return out


def _later_duplicate(frame: _Frame, rule: Rule) -> Column:
    """True for every copy of an event after the first in (``SEQ_POS``, input order).

    The key is ``EVENT_ID`` where that column exists and is non-null, else the whole
    (user, item, parsed ts, type) row; nulls compare equal, as in pandas ``duplicated``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = frame.df
    has_id = F.col(EVENT_ID).isNotNull() if EVENT_ID in df.columns else F.lit(False)
    event_type = F.col(EVENT_TYPE) if EVENT_TYPE in df.columns else F.lit(None)
    content = [F.col(USER_ID), F.col(ITEM_ID), F.col(PARSED_TS), event_type]
    key = [has_id]
    if EVENT_ID in df.columns:
        key.append(F.when(has_id, F.col(EVENT_ID)))
    key += [F.when(~has_id, part) for part in content]
    order = [F.col(ROW_ORDER)]
    if SEQ_POS in df.columns:
        order.insert(0, F.col(SEQ_POS).asc_nulls_last())
    window = Window.partitionBy(*key).orderBy(*order)
    return F.row_number().over(window) > F.lit(1)


def _seconds_of(moment: datetime) -> Column:
    from pyspark.sql import functions as F

    return F.lit(_utc(moment).timestamp())


# One predicate per check: a boolean column, true for the rows that break the rule.
SPARK_CHECKS: dict[Check, Callable[[_Frame, Rule], Column]] = {
    Check.NULL_ID: _null_id,
    Check.AFTER_NOW: lambda f, rule: _col(TS_SECONDS) > _seconds_of(f.now),
    Check.BEFORE_EPOCH: lambda f, rule: _col(TS_SECONDS) < _seconds_of(f.epoch),
    Check.UNPARSABLE_TIME: lambda f, rule: _col(TS_SECONDS).isNull(),
    Check.UNKNOWN_TYPE: _unknown_type,
    Check.LATER_DUPLICATE: _later_duplicate,
    Check.INVALID_UTF8: _invalid_utf8,
}


def _col(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col(name)


def annotate_bad_rows_spark(
    df: DataFrame,
    *,
    now: datetime,
    epoch: datetime,
    known_event_types: Iterable[str] = EVENT_TYPES,
) -> DataFrame:
    """Add ``REASON`` (the first broken rule, null when clean) and the helper columns.

    Args:
        df: [E] event rows with at least ``USER_ID``, ``ITEM_ID`` and ``EVENT_TS``.
        now: rows later than this are ``future_timestamp`` (naive = UTC).
        epoch: rows earlier than this are ``before_epoch`` (naive = UTC).
        known_event_types: the accepted ``EVENT_TYPE`` values.

    Returns:
        [E] rows: the input columns + ``REASON`` + ``HELPER_COLUMNS`` (drop those before
        writing; ``PARSED_TS`` is the clean rows' ``EVENT_TS``).
    """
    from pyspark.sql import functions as F

    zone = df.sparkSession.conf.get("spark.sql.session.timeZone")
    if zone not in ("UTC", "Etc/UTC", "GMT", "Z", "+00:00"):
        logger.warning("Spark session time zone is %s, not UTC: naive timestamps shift", zone)
    raw_type = df.schema[EVENT_TS].dataType
    seconds = time_seconds_spark(F.col(EVENT_TS), raw_type, unix_scale(df))
    annotated = (
        df.withColumn(ROW_ORDER, F.monotonically_increasing_id())
        .withColumn(TS_SECONDS, seconds)
        .withColumn(PARSED_TS, _timestamp_of(F.col(TS_SECONDS)))
    )
    frame = _Frame(annotated, now, epoch, tuple(known_event_types))
    first, *rest = RULES
    reason = F.when(SPARK_CHECKS[first.check](frame, first), F.lit(first.reason))
    for rule in rest:
        reason = reason.when(SPARK_CHECKS[rule.check](frame, rule), F.lit(rule.reason))
    return annotated.withColumn(REASON, reason.otherwise(F.lit(None).cast("string")))
