"""Spark transforms: events -> user-history snapshots, training examples, item and user tables.

DataFrame -> DataFrame functions; reading and writing live in ``mirec.features.build``. Event
order is (``EVENT_TS``, ``SEQ_POS``) as in ``mirec.data``, and only ``BEHAVIOUR_EVENT_TYPES``
enter sequences.

Snapshot semantics and tied timestamps. The snapshot row of an event e holds the last N
behaviour events with ``EVENT_TS`` strictly before ``EVENT_TS(e)`` and is stamped
``event_timestamp = EVENT_TS(e)``. Feast identifies a feature row by (entity, event_timestamp)
only: a point-in-time join for (user, t) returns ONE row per user and time, and the file offline
store picks among rows tied on the timestamp with an unstable sort. So events that share e's
timestamp are left out of e's snapshot whatever their ``SEQ_POS`` (earlier ones too): every row
of a tie holds the same values, and what Feast serves for time t never contains an event at or
after t (at an event's time: exactly the events before it; between events: the snapshot of the
latest event at or before t). Within a history, ties keep ``SEQ_POS`` order. The training
examples are exact instead: prefixes in (``EVENT_TS``, ``SEQ_POS``) order, identical to
``mirec.data.splits.split_to_frame``. The "as of build" row of a user holds the last N of ALL its
events, stamped with the build time (later than every snapshot); it is what is served online.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pyspark.sql import Column, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from mirec.config import DataConfig
from mirec.features.repo import ROW_EVENT, ROW_LATEST
from mirec.schema import (
    BEHAVIOUR_EVENT_TYPES,
    EVENT_TS,
    EVENT_TYPE,
    FEAST_CREATED_TS,
    FEAST_TS,
    HIST_ITEM_IDS,
    HIST_LEN,
    HIST_TS,
    ITEM_ATTRIBUTES,
    ITEM_ID,
    ITEM_IDX,
    ITEM_POPULARITY,
    NUM_EVENTS,
    ROW_KIND,
    SEQ_POS,
    SPLIT,
    SPLITS,
    TARGET_ITEM_IDS,
    USER_ATTRIBUTES,
    USER_ID,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

TRAIN, VALID, TEST = SPLITS
# Helper columns of the ordered event frame (never written).
POS = "_pos"  # 1-based position of the event in its user's sequence
USER_LEN = "_user_len"  # behaviour events of the user
TS_US = "_ts_us"  # EVENT_TS as microseconds since the unix epoch
RAW_ITEMS = "_raw_items"  # the hist_len items before the event in (ts, seq_pos) order
RAW_TS = "_raw_ts"  # their timestamps (microseconds)
TRAIN_HIST = "_train_hist"  # the max_len items before the event (training examples)
_ROW = "_row"
_STRING_ARRAY = T.ArrayType(T.StringType())


def behaviour_events(events: DataFrame) -> DataFrame:
    """Keep ``BEHAVIOUR_EVENT_TYPES`` rows (all rows when there is no ``EVENT_TYPE`` column)."""
    if EVENT_TYPE not in events.columns:
        return events
    return events.filter(F.col(EVENT_TYPE).isin(list(BEHAVIOUR_EVENT_TYPES)))


def encode_items(events: DataFrame, vocab: DataFrame) -> DataFrame:
    """Add ``ITEM_IDX`` from the vocabulary frame (``ITEM_ID``, ``ITEM_IDX``); unknown ids drop.

    The vocabulary is small next to the events and is broadcast.
    """
    return events.join(F.broadcast(vocab.select(ITEM_ID, ITEM_IDX)), on=ITEM_ID, how="inner")


def ordered_events(encoded: DataFrame, hist_len: int, max_len: int) -> DataFrame:
    """One window pass over each user's events in (``EVENT_TS``, ``SEQ_POS``) order.

    Args:
        encoded: [E] behaviour events with ``ITEM_IDX``.
        hist_len: N of the snapshots (items kept before each event).
        max_len: history window of the training examples.

    Returns:
        [E] rows: ``USER_ID``, ``ITEM_IDX``, ``EVENT_TS``, ``SEQ_POS`` + ``POS``, ``USER_LEN``,
        ``RAW_ITEMS`` / ``RAW_TS`` (the ``hist_len`` events before, oldest first) and
        ``TRAIN_HIST`` (the ``max_len`` items before).
    """
    order = Window.partitionBy(USER_ID).orderBy(EVENT_TS, SEQ_POS)
    user = Window.partitionBy(USER_ID)
    before = order.rowsBetween(-hist_len, -1)
    # The user length first: its window buffers whole users, cheaper before the arrays exist.
    frame = encoded.select(
        USER_ID,
        ITEM_IDX,
        EVENT_TS,
        SEQ_POS,
        F.unix_micros(EVENT_TS).alias(TS_US),
        F.count(F.lit(1)).over(user).alias(USER_LEN),
    )
    columns = [
        F.row_number().over(order).alias(POS),
        F.collect_list(ITEM_IDX).over(before).alias(RAW_ITEMS),
        F.collect_list(TS_US).over(before).alias(RAW_TS),
    ]
    if max_len != hist_len:
        window = order.rowsBetween(-max_len, -1)
        columns.append(F.collect_list(ITEM_IDX).over(window).alias(TRAIN_HIST))
    out = frame.select("*", *columns)
    return out if max_len != hist_len else out.withColumn(TRAIN_HIST, F.col(RAW_ITEMS))


def _last_n(values: Column, n: int) -> Column:
    """The last ``n`` elements of an array column (all of them when shorter)."""
    return F.slice(values, F.greatest(F.size(values) - F.lit(n - 1), F.lit(1)), F.lit(n))


def user_history_rows(ordered: DataFrame, hist_len: int, build_ts: datetime) -> DataFrame:
    """Snapshot rows (one per event) plus one "as of build" row per user, in one pass.

    Args:
        ordered: the output of ``ordered_events``.
        hist_len: N.
        build_ts: the build time (UTC); the "as of build" rows get
            ``max(build_ts, last event + 1 µs)`` as event timestamp.

    Returns:
        [E + U] rows: ``USER_ID``, ``SEQ_POS`` (null for "as of build" rows), ``FEAST_TS``,
        ``FEAST_CREATED_TS``, ``HIST_ITEM_IDS`` (int64 list), ``HIST_TS`` (int64 µs list),
        ``HIST_LEN``, ``NUM_EVENTS``, ``ROW_KIND`` (``ROW_EVENT`` | ``ROW_LATEST``: the
        partition column of the written table).
    """
    tie = Window.partitionBy(USER_ID, EVENT_TS).orderBy(SEQ_POS)
    tied = ordered.select(
        "*",
        F.first(RAW_ITEMS).over(tie).alias(HIST_ITEM_IDS),
        F.first(RAW_TS).over(tie).alias(HIST_TS),
        (F.first(POS).over(tie) - 1).cast("long").alias(NUM_EVENTS),
    )
    snapshot = F.struct(
        F.col(USER_ID),
        F.col(SEQ_POS),
        F.col(EVENT_TS).alias(FEAST_TS),
        F.col(EVENT_TS).alias(FEAST_CREATED_TS),
        F.col(HIST_ITEM_IDS),
        F.col(HIST_TS),
        F.size(HIST_ITEM_IDS).cast("long").alias(HIST_LEN),
        F.col(NUM_EVENTS),
        F.lit(ROW_EVENT).alias(ROW_KIND),
    )
    all_items = _last_n(F.concat(RAW_ITEMS, F.array(ITEM_IDX)), hist_len)
    all_ts = _last_n(F.concat(RAW_TS, F.array(TS_US)), hist_len)
    latest_ts = F.greatest(F.lit(build_ts), F.timestamp_micros(F.col(TS_US) + 1))
    latest = F.struct(
        F.col(USER_ID),
        F.lit(None).cast("long").alias(SEQ_POS),
        latest_ts.alias(FEAST_TS),
        latest_ts.alias(FEAST_CREATED_TS),
        all_items.alias(HIST_ITEM_IDS),
        all_ts.alias(HIST_TS),
        F.size(all_items).cast("long").alias(HIST_LEN),
        F.col(USER_LEN).cast("long").alias(NUM_EVENTS),
        F.lit(ROW_LATEST).alias(ROW_KIND),
    )
    rows = F.when(F.col(POS) == F.col(USER_LEN), F.array(snapshot, latest)).otherwise(
        F.array(snapshot)
    )
    return tied.select(F.explode(rows).alias(_ROW)).select(f"{_ROW}.*")


def _example_rows(ordered: DataFrame, split: Column) -> DataFrame:
    return ordered.select(
        F.col(USER_ID),
        split.alias(SPLIT),
        F.col(TRAIN_HIST).alias(HIST_ITEM_IDS),
        F.array(ITEM_IDX).alias(TARGET_ITEM_IDS),
    )


def training_examples_b(ordered: DataFrame) -> DataFrame:
    """Protocol B (leave-one-out) rows, the same as ``split_to_frame`` (row order aside).

    A user with n >= 3 events: test = event n, valid = event n-1, train = events 2..n-2 (each
    with the ``max_len`` items before it); a user with fewer: train = events 2..n.

    Returns:
        [R] ``USER_ID``, ``SPLIT``, ``HIST_ITEM_IDS``, ``TARGET_ITEM_IDS`` (one item).
    """
    pos, n = F.col(POS), F.col(USER_LEN)
    split = (
        F.when((n >= 3) & (pos == n), F.lit(TEST))
        .when((n >= 3) & (pos == n - 1), F.lit(VALID))
        .otherwise(F.lit(TRAIN))
    )
    return _example_rows(ordered.filter(pos >= 2), split)


def user_bucket(user_id: Column, seed: int) -> Column:
    """Spark twin of ``mirec.data.splits.user_bucket``: sha1 of ``"{seed}:{user}"`` in [0, 1)."""
    digest = F.sha1(F.concat(F.lit(f"{seed}:"), user_id).cast("binary"))
    return F.conv(F.substring(digest, 1, 8), 16, 10).cast("double") / F.lit(float(2**32))


def user_part(user_id: Column, cfg: DataConfig) -> Column:
    """Protocol A part of a user by hash bucket (thresholds computed in Python doubles)."""
    train_below = 1 - cfg.valid_fraction - cfg.test_fraction
    valid_below = 1 - cfg.test_fraction
    bucket = user_bucket(user_id, cfg.split_seed)
    return (
        F.when(bucket < F.lit(train_below), F.lit(TRAIN))
        .when(bucket < F.lit(valid_below), F.lit(VALID))
        .otherwise(F.lit(TEST))
    )


def _history_cut(length: Column, cfg: DataConfig) -> Column:
    """floor(history_fraction * n) in IEEE doubles, as ``split_users`` computes it."""
    return F.floor(F.lit(float(cfg.history_fraction)) * length.cast("double")).cast("long")


def _is_eval_user(part: Column, cut: Column, length: Column) -> Column:
    return (part != F.lit(TRAIN)) & (cut > 0) & (cut < length)


def training_examples_a(ordered: DataFrame, encoded: DataFrame, cfg: DataConfig) -> DataFrame:
    """Protocol A (user split) rows, the same as ``split_to_frame`` (row order aside).

    Training users give every prefix (from the window pass); valid / test users give one row:
    the ``max_len`` items before the cut as history and every later item as targets (a
    per-user aggregate over the ~20% of events that belong to such users).

    Args:
        ordered: the output of ``ordered_events``.
        encoded: the behaviour events with ``ITEM_IDX`` (input of ``ordered_events``).
        cfg: ``split_seed``, fractions and ``max_len``.
    """
    part = user_part(F.col(USER_ID), cfg)
    n = F.col(USER_LEN)
    train_rows = ordered.filter(
        ~_is_eval_user(part, _history_cut(n, cfg), n) & (F.col(POS) >= 2)
    ).transform(lambda df: _example_rows(df, F.lit(TRAIN)))
    eval_users = encoded.filter(part != F.lit(TRAIN))
    seq = F.sort_array(F.collect_list(F.struct(EVENT_TS, SEQ_POS, ITEM_IDX)))
    per_user = eval_users.groupBy(USER_ID).agg(seq.alias(_ROW))
    items = F.col(f"{_ROW}.{ITEM_IDX}")
    length = F.size(_ROW)
    cut = _history_cut(length, cfg)
    eval_rows = per_user.filter(_is_eval_user(part, cut, length)).select(
        F.col(USER_ID),
        part.alias(SPLIT),
        F.slice(
            items, F.greatest(cut - cfg.max_len + 1, F.lit(1)), F.least(cut, F.lit(cfg.max_len))
        ).alias(HIST_ITEM_IDS),
        F.slice(items, cut + 1, length - cut).alias(TARGET_ITEM_IDS),
    )
    return train_rows.unionByName(eval_rows)


def item_features(
    vocab: DataFrame,
    behaviour: DataFrame,
    catalog: DataFrame | None,
    valid_from: datetime,
    build_ts: datetime,
) -> DataFrame:
    """One row per vocabulary item: index, attributes and popularity as of the build.

    Args:
        vocab: ``ITEM_ID``, ``ITEM_IDX`` (every item of the append-only vocabulary).
        behaviour: behaviour events (``ITEM_ID``); popularity = their count per item.
        catalog: ``ITEM_ID``, ``ITEM_ATTRIBUTES`` (list of str), or None.
        valid_from: the rows' event timestamp (a static table: valid at every time).
        build_ts: the rows' created timestamp.
    """
    popularity = behaviour.groupBy(ITEM_ID).agg(F.count(F.lit(1)).alias(ITEM_POPULARITY))
    rows = vocab.select(ITEM_ID, ITEM_IDX).join(popularity, on=ITEM_ID, how="left")
    rows = _with_attributes(rows, catalog, ITEM_ID, ITEM_ATTRIBUTES)
    return rows.select(
        ITEM_ID,
        F.col(ITEM_IDX).cast("long").alias(ITEM_IDX),
        ITEM_ATTRIBUTES,
        F.coalesce(F.col(ITEM_POPULARITY), F.lit(0)).cast("long").alias(ITEM_POPULARITY),
        F.lit(valid_from).alias(FEAST_TS),
        F.lit(build_ts).alias(FEAST_CREATED_TS),
    )


def user_profiles(
    events: DataFrame, users: DataFrame | None, valid_from: datetime, build_ts: datetime
) -> DataFrame:
    """One row per user of the events or the profile table: attribute tokens as of the build.

    Args:
        events: all events (``USER_ID``).
        users: ``USER_ID``, ``USER_ATTRIBUTES`` (list of str), or None.
        valid_from: the rows' event timestamp (a static table: valid at every time).
        build_ts: the rows' created timestamp.
    """
    ids = events.select(USER_ID).distinct()
    if users is not None:
        ids = ids.unionByName(users.select(USER_ID)).distinct()
    rows = _with_attributes(ids, users, USER_ID, USER_ATTRIBUTES)
    return rows.select(
        USER_ID,
        USER_ATTRIBUTES,
        F.lit(valid_from).alias(FEAST_TS),
        F.lit(build_ts).alias(FEAST_CREATED_TS),
    )


def _with_attributes(rows: DataFrame, table: DataFrame | None, key: str, column: str) -> DataFrame:
    """Left-join an attribute list column; missing lists become empty lists."""
    if table is None or column not in table.columns:
        return rows.withColumn(column, F.array().cast(_STRING_ARRAY))
    attrs = table.select(key, F.col(column).cast(_STRING_ARRAY).alias(column)).dropDuplicates([key])
    joined = rows.join(attrs, on=key, how="left")
    return joined.withColumn(column, F.coalesce(F.col(column), F.array().cast(_STRING_ARRAY)))
