"""The event row rules of ``mirec.data.quality`` as Spark column expressions (same reasons).

``annotate_bad_rows_spark`` adds the ``REASON`` column (null for clean rows) and the parsed UTC
timestamp; a row gets the FIRST reason that applies, exactly as ``find_bad_rows`` does in pandas:
``null_user_id``, ``null_item_id``, ``bad_timestamp``, ``future_timestamp``, ``before_epoch``,
``unknown_event_type``, ``duplicate_event``, ``invalid_utf8_id``.

Timestamps are parsed like ``mirec.data.events.to_utc_timestamps``: numbers and numeric strings
are unix seconds, other strings ISO 8601 (naive = the session time zone, which must be UTC, as
every mirec session sets it), and values outside pandas' nanosecond range (years ~1678..2261)
are unparsable. Ids that were not valid UTF-8 reach Spark as strings holding U+FFFD.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

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
ROW_ORDER = "__mirec_row_order"  # helper column: input order, the tie-break among duplicates
HELPER_COLUMNS = (PARSED_TS, ROW_ORDER)
# Java regex: U+FFFD (undecodable bytes) or a lone surrogate, as INVALID_UTF8_PATTERN in pandas.
INVALID_UTF8_JAVA_REGEX = "[\\uFFFD\\uD800-\\uDFFF]"
MAX_ABS_UNIX_SECONDS = 9.2e9  # the bound ``to_utc_timestamps`` applies to numbers
MIN_PANDAS_TS = pd.Timestamp.min.tz_localize(UTC).ceil("us").to_pydatetime()
MAX_PANDAS_TS = pd.Timestamp.max.tz_localize(UTC).floor("us").to_pydatetime()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _seconds_to_ts(seconds: Column) -> Column:
    """Double unix seconds -> timestamp; NaN, infinities and out-of-range values -> null."""
    from pyspark.sql import functions as F

    ok = ~F.isnan(seconds) & (F.abs(seconds) < F.lit(MAX_ABS_UNIX_SECONDS))
    micros = F.round(seconds * F.lit(1_000_000.0)).cast("long")
    return F.when(ok, F.timestamp_micros(micros))


def parse_timestamps_spark(column: Column, data_type: DataType) -> Column:
    """Parse a raw timestamp column to a UTC timestamp (null when unparsable).

    Args:
        column: the raw values.
        data_type: their Spark type (timestamp, date, numeric or string).

    Returns:
        A timestamp column: unparsable or out-of-range values are null.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if isinstance(data_type, T.TimestampType | T.TimestampNTZType | T.DateType):
        parsed = column.cast("timestamp")
    elif isinstance(data_type, T.NumericType):
        parsed = _seconds_to_ts(column.cast("double"))
    else:
        text = column.cast("string")
        numeric = text.try_cast("double")
        parsed = F.when(numeric.isNotNull(), _seconds_to_ts(numeric)).otherwise(
            text.try_cast("timestamp")
        )
    in_range = (parsed >= F.lit(MIN_PANDAS_TS)) & (parsed <= F.lit(MAX_PANDAS_TS))
    return F.when(in_range, parsed)


def _is_null_id(name: str) -> Column:
    from pyspark.sql import functions as F

    text = F.col(name).cast("string")
    return text.isNull() | (text == F.lit(""))


def _has_invalid_utf8(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.coalesce(F.col(name).cast("string").rlike(INVALID_UTF8_JAVA_REGEX), F.lit(False))


def _later_duplicate(df: DataFrame) -> Column:
    """True for every copy of an event after the first in (``SEQ_POS``, input order).

    The key is ``EVENT_ID`` where that column exists and is non-null, else the whole
    (user, item, parsed ts, type) row; nulls compare equal, as in pandas ``duplicated``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

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
        [E] rows: the input columns + ``REASON`` + ``PARSED_TS`` + ``ROW_ORDER``
        (drop ``HELPER_COLUMNS`` before writing).
    """
    from pyspark.sql import functions as F

    zone = df.sparkSession.conf.get("spark.sql.session.timeZone")
    if zone not in ("UTC", "Etc/UTC", "GMT", "Z", "+00:00"):
        logger.warning("Spark session time zone is %s, not UTC: naive timestamps shift", zone)
    raw_type = df.schema[EVENT_TS].dataType
    annotated = df.withColumn(ROW_ORDER, F.monotonically_increasing_id()).withColumn(
        PARSED_TS, parse_timestamps_spark(F.col(EVENT_TS), raw_type)
    )
    if EVENT_TYPE in df.columns:
        known = F.col(EVENT_TYPE).isin(list(known_event_types))
        bad_type = ~F.coalesce(known, F.lit(False))
    else:
        bad_type = F.lit(False)
    ts = F.col(PARSED_TS)
    rules = [
        (_is_null_id(USER_ID), NULL_USER_ID),
        (_is_null_id(ITEM_ID), NULL_ITEM_ID),
        (ts.isNull(), BAD_TIMESTAMP),
        (ts > F.lit(_utc(now)), FUTURE_TIMESTAMP),
        (ts < F.lit(_utc(epoch)), BEFORE_EPOCH),
        (bad_type, UNKNOWN_EVENT_TYPE),
        (_later_duplicate(annotated), DUPLICATE_EVENT),
        (_has_invalid_utf8(USER_ID) | _has_invalid_utf8(ITEM_ID), INVALID_UTF8_ID),
    ]
    reason = F.when(rules[0][0], F.lit(rules[0][1]))
    for condition, name in rules[1:]:
        reason = reason.when(condition, F.lit(name))
    return annotated.withColumn(REASON, reason.otherwise(F.lit(None).cast("string")))
