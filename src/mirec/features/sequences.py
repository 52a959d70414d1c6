"""Spark transforms: events -> user-history snapshots, training examples, item and user tables.

DataFrame -> DataFrame functions; reading and writing live in ``mirec.features.build``. Event
order is (``EVENT_TS``, ``SEQ_POS``) as in ``mirec.data``, and only ``BEHAVIOUR_EVENT_TYPES``
enter sequences.

One shuffle and one sort per build: ``user_sequences`` groups each user's events into arrays in
event order, and every per-user output (snapshots, "as of build" rows, training examples, their
counts) is derived from that frame with array slices, O(N) per event also for a user with 10^5
events. No sliding window frames: they re-aggregate N rows for every event, and each output
would sort the events again.

Snapshot semantics and tied timestamps. Event order is (``EVENT_TS``, ``SEQ_POS``): public
files have day-level timestamps with many ties (57% of Beauty's events share their user's
timestamp with another), and ``SEQ_POS`` is the order they were delivered in. The snapshot row of
the k-th event of a user holds the last N behaviour events before it in that order (events
1..k-1, earlier events of its own tie included) and is stamped with the event's sequence time
``event_stamp = EVENT_TS + r µs``, r = the event's rank among the user's events sharing its
timestamp (0 for the first). Feast identifies a feature row by (entity, event_timestamp), so
distinct stamps are what lets a point-in-time join at an event's stamp return exactly that
event's snapshot; the histories keep the raw ``EVENT_TS`` values (``HIST_TS``). A build fails
when a tie of m events is followed less than m µs later by the user's next event (the stamps
would not be increasing; ``stamp_collisions``). The training set is the point-in-time join of
the protocol's training events at their stamps (``mirec.features.training_set``), identical to
``mirec.data.splits.split_to_frame``'s training rows. The "as of build" row of a user holds the
last N of ALL its events, stamped with the build time (later than every snapshot); it is what
is served online.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pyspark.sql import Column
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
# Helper columns of the per-user frame (never written).
ITEMS = "_items"  # the user's behaviour items in (EVENT_TS, SEQ_POS) order
TIMES = "_times"  # their EVENT_TS as microseconds since the unix epoch
POSITIONS = "_positions"  # their SEQ_POS
USER_LEN = "_user_len"  # number of behaviour events of the user
_STARTS = "_starts"  # 1-based positions where a new timestamp begins
_RANKS = "_ranks"  # per event: its 0-based rank among the user's events sharing its timestamp
_STAMP = "_stamp"  # an event's Feast event time in µs: EVENT_TS + its rank
_POS = "_pos"  # 1-based position of an event in its user's sequence
_ITEM = "_item"
# Columns of ``event_rows`` that other modules read.
EVENT_POS, EVENT_ITEM, EVENT_STAMP = _POS, _ITEM, _STAMP
_ROW = "_row"
_STRING_ARRAY = T.ArrayType(T.StringType())


def _is_behaviour(events: DataFrame) -> Column:
    """True for ``BEHAVIOUR_EVENT_TYPES`` rows (every row when there is no ``EVENT_TYPE``)."""
    if EVENT_TYPE not in events.columns:
        return F.lit(True)
    return F.col(EVENT_TYPE).isin(list(BEHAVIOUR_EVENT_TYPES))


def behaviour_events(events: DataFrame) -> DataFrame:
    """Keep ``BEHAVIOUR_EVENT_TYPES`` rows (all rows when there is no ``EVENT_TYPE`` column)."""
    if EVENT_TYPE not in events.columns:
        return events
    return events.filter(_is_behaviour(events))


def item_counts(events: DataFrame, catalog: DataFrame | None) -> DataFrame:
    """Every item id of the events (any type) and the catalog, with its behaviour events.

    One aggregation serves both the vocabulary (the ids) and the item popularity (the counts).

    Args:
        events: [E] events (``ITEM_ID``, optional ``EVENT_TYPE``); null item ids are left out.
        catalog: ``ITEM_ID`` of the catalog items (popularity 0 unless in events), or None.

    Returns:
        [I] ``ITEM_ID``, ``ITEM_POPULARITY`` (number of behaviour events; null when none).
    """
    flags = events.where(F.col(ITEM_ID).isNotNull()).select(
        ITEM_ID, _is_behaviour(events).cast("long").alias(ITEM_POPULARITY)
    )
    if catalog is not None:
        listed = catalog.select(ITEM_ID, F.lit(0).cast("long").alias(ITEM_POPULARITY))
        flags = flags.unionByName(listed)
    return flags.groupBy(ITEM_ID).agg(F.sum(ITEM_POPULARITY).alias(ITEM_POPULARITY))


def encode_items(events: DataFrame, vocab: DataFrame) -> DataFrame:
    """Add ``ITEM_IDX`` from the vocabulary frame (``ITEM_ID``, ``ITEM_IDX``); unknown ids drop.

    The vocabulary is small next to the events and is broadcast.
    """
    return events.join(F.broadcast(vocab.select(ITEM_ID, ITEM_IDX)), on=ITEM_ID, how="inner")


def user_sequences(encoded: DataFrame) -> DataFrame:
    """Each user's behaviour events as arrays in (``EVENT_TS``, ``SEQ_POS``) order.

    The one shuffle of the build: the events are repartitioned by user (so the grouping runs once,
    after the shuffle, without a map-side partial aggregation) and ``sort_array`` orders each
    user's events (the order ``collect_list`` meets them in is not guaranteed). Every output is
    then derived per user with array slices, O(N) per event even for a user with 10^5 events;
    cache the frame when more than one output is written from it.

    Args:
        encoded: [E] behaviour events with ``ITEM_IDX``.

    Returns:
        [U] rows: ``USER_ID``, ``ITEMS``, ``TIMES`` (µs), ``POSITIONS`` (int64 [L] each, the
        same order) and ``USER_LEN`` (L >= 1).
    """
    event = F.struct(
        F.unix_micros(EVENT_TS).alias(TIMES),
        F.col(SEQ_POS).alias(POSITIONS),
        F.col(ITEM_IDX).alias(ITEMS),
    )
    per_user = (
        encoded.repartition(USER_ID)
        .groupBy(USER_ID)
        .agg(F.sort_array(F.collect_list(event)).alias(_ROW))
    )
    row = F.col(_ROW)
    return per_user.select(
        USER_ID,
        row.getField(ITEMS).alias(ITEMS),
        row.getField(TIMES).alias(TIMES),
        row.getField(POSITIONS).alias(POSITIONS),
        F.size(row).alias(USER_LEN),
    )


def _window(values: Column, end: Column, n: int) -> Column:
    """Elements ``end - n + 1 .. end`` (1-based, clipped at 1) of an array: [min(end, n)]."""
    return F.slice(values, F.greatest(end - F.lit(n - 1), F.lit(1)), F.least(end, F.lit(n)))


def _tie_starts(times: Column, length: Column) -> Column:
    """1-based positions whose timestamp differs from the one before (position 1 included): [K].

    O(L): two ``zip_with`` passes whose lambdas read only their arguments (an outer column
    referenced inside a lambda may be evaluated again for every element).
    """
    previous = F.concat(F.array(F.lit(None).cast("long")), F.slice(times, 1, length - 1))
    changed = F.zip_with(times, previous, lambda now, before: ~now.eqNullSafe(before))
    positions = F.sequence(F.lit(1), length)
    return F.array_compact(F.zip_with(changed, positions, lambda new, i: F.when(new | (i == 1), i)))


def _tie_ranks(starts: Column, length: Column) -> Column:
    """Per event, its 0-based rank among the user's events sharing its timestamp: [L].

    O(L): the tie sizes from consecutive starts, then one ``sequence(0, m - 1)`` per tie.
    """
    following = F.concat(F.slice(starts, 2, length), F.array(length + 1))
    sizes = F.zip_with(following, starts, lambda nxt, first: nxt - first)
    return F.flatten(F.transform(sizes, lambda m: F.sequence(F.lit(0), m - 1)))


def stamps_collide(times: Column, length: Column) -> Column:
    """True when a user's event stamps would not increase: a tie of m events is followed by the
    next event less than m µs later (see the module notes). O(L) per user."""
    starts = _tie_starts(times, length)
    following = F.concat(F.slice(starts, 2, length), F.array(length + 1))
    sizes = F.zip_with(following, starts, lambda nxt, first: nxt - first)
    tie_times = F.array_distinct(times)  # times are sorted: one per tie, in order
    gaps = F.zip_with(F.slice(tie_times, 2, length), tie_times, lambda later, t: later - t)
    short = F.zip_with(gaps, sizes, lambda gap, m: F.coalesce(gap < m, F.lit(False)))
    return F.exists(short, lambda hit: hit)


def event_rows(per_user: DataFrame) -> DataFrame:
    """One row per behaviour event, with its position and its stamp (the Feast event time).

    Args:
        per_user: the output of ``user_sequences``.

    Returns:
        [E] ``USER_ID``, ``ITEMS``, ``TIMES``, ``USER_LEN`` (the user's arrays, for windows),
        ``SEQ_POS``, ``_pos`` (1-based position k), ``_item`` (its item index) and ``_stamp``
        (µs: ``EVENT_TS`` + the event's rank within its tie).
    """
    ranked = per_user.select(
        USER_ID,
        ITEMS,
        TIMES,
        POSITIONS,
        USER_LEN,
        _tie_ranks(_tie_starts(F.col(TIMES), F.col(USER_LEN)), F.col(USER_LEN)).alias(_RANKS),
    )
    exploded = ranked.select(
        USER_ID, ITEMS, TIMES, USER_LEN, _RANKS, F.posexplode(POSITIONS).alias(_POS, SEQ_POS)
    )
    pos = F.col(_POS) + 1
    stamp = F.element_at(TIMES, pos) + F.element_at(_RANKS, pos).cast("long")
    return exploded.select(
        USER_ID,
        ITEMS,
        TIMES,
        USER_LEN,
        SEQ_POS,
        pos.alias(_POS),
        F.element_at(ITEMS, pos).alias(_ITEM),
        stamp.alias(_STAMP),
    )


def _snapshot_rows(per_user: DataFrame, hist_len: int) -> DataFrame:
    """One snapshot row per event k: the last ``hist_len`` events before it, at its stamp."""
    events = event_rows(per_user)
    before = F.col(_POS) - 1
    stamp = F.timestamp_micros(F.col(_STAMP))
    items = _window(F.col(ITEMS), before, hist_len)
    rows = events.select(
        USER_ID,
        SEQ_POS,
        stamp.alias(FEAST_TS),
        stamp.alias(FEAST_CREATED_TS),
        items.alias(HIST_ITEM_IDS),
        _window(F.col(TIMES), before, hist_len).alias(HIST_TS),
        F.size(items).cast("long").alias(HIST_LEN),
        before.cast("long").alias(NUM_EVENTS),
    )
    return rows.withColumn(ROW_KIND, F.lit(ROW_EVENT))


def _latest_rows(per_user: DataFrame, hist_len: int, build_ts: datetime) -> DataFrame:
    """One "as of build" row per user: the last N of all its events, after its last stamp."""
    length = F.col(USER_LEN)
    last_rank = length - F.element_at(_tie_starts(F.col(TIMES), length), -1)
    last_stamp = F.element_at(TIMES, -1) + last_rank.cast("long")
    latest_ts = F.greatest(F.lit(build_ts), F.timestamp_micros(last_stamp + 1))
    items = _window(F.col(ITEMS), length, hist_len)
    return per_user.select(
        USER_ID,
        F.lit(None).cast("long").alias(SEQ_POS),
        latest_ts.alias(FEAST_TS),
        latest_ts.alias(FEAST_CREATED_TS),
        items.alias(HIST_ITEM_IDS),
        _window(F.col(TIMES), length, hist_len).alias(HIST_TS),
        F.size(items).cast("long").alias(HIST_LEN),
        length.cast("long").alias(NUM_EVENTS),
        F.lit(ROW_LATEST).alias(ROW_KIND),
    )


def user_history_rows(per_user: DataFrame, hist_len: int, build_ts: datetime) -> DataFrame:
    """Snapshot rows (one per event) plus one "as of build" row per user.

    Args:
        per_user: the output of ``user_sequences``.
        hist_len: N.
        build_ts: the build time (UTC); the "as of build" rows get
            ``max(build_ts, last event + 1 µs)`` as event timestamp.

    Returns:
        [E + U] rows: ``USER_ID``, ``SEQ_POS`` (null for "as of build" rows), ``FEAST_TS``,
        ``FEAST_CREATED_TS``, ``HIST_ITEM_IDS`` (int64 list), ``HIST_TS`` (int64 µs list),
        ``HIST_LEN``, ``NUM_EVENTS``, ``ROW_KIND`` (``ROW_EVENT`` | ``ROW_LATEST``: the
        partition column of the written table).
    """
    snapshots = _snapshot_rows(per_user, hist_len)
    return snapshots.unionByName(_latest_rows(per_user, hist_len, build_ts))


def _prefix_rows(per_user: DataFrame, max_len: int) -> DataFrame:
    """Every event after a user's first, with the ``max_len`` items before it as history.

    Returns:
        [R] ``USER_ID``, ``POS`` (2..L), ``USER_LEN``, ``HIST_ITEM_IDS``, ``TARGET_ITEM_IDS``.
    """
    events = per_user.select(USER_ID, ITEMS, USER_LEN, F.posexplode(ITEMS).alias(_POS, _ITEM))
    pos = F.col(_POS) + 1
    return events.where(pos >= 2).select(
        USER_ID,
        pos.alias(_POS),
        USER_LEN,
        _window(F.col(ITEMS), pos - 1, max_len).alias(HIST_ITEM_IDS),
        F.array(_ITEM).alias(TARGET_ITEM_IDS),
    )


def training_examples_b(per_user: DataFrame, max_len: int) -> DataFrame:
    """Protocol B (leave-one-out) rows, the same as ``split_to_frame`` (row order aside).

    A user with n >= 3 events: test = event n, valid = event n-1, train = events 2..n-2 (each
    with the ``max_len`` items before it); a user with fewer: train = events 2..n.

    Args:
        per_user: the output of ``user_sequences``.
        max_len: history window of the examples.

    Returns:
        [R] ``USER_ID``, ``SPLIT``, ``HIST_ITEM_IDS``, ``TARGET_ITEM_IDS`` (one item).
    """
    pos, n = F.col(_POS), F.col(USER_LEN)
    split = (
        F.when((n >= 3) & (pos == n), F.lit(TEST))
        .when((n >= 3) & (pos == n - 1), F.lit(VALID))
        .otherwise(F.lit(TRAIN))
    )
    rows = _prefix_rows(per_user, max_len)
    return rows.select(USER_ID, split.alias(SPLIT), HIST_ITEM_IDS, TARGET_ITEM_IDS)


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


def history_cut(length: Column, cfg: DataConfig) -> Column:
    """floor(history_fraction * n) in IEEE doubles, as ``split_users`` computes it."""
    return F.floor(F.lit(float(cfg.history_fraction)) * length.cast("double")).cast("long")


def is_eval_user(part: Column, cut: Column, length: Column) -> Column:
    return (part != F.lit(TRAIN)) & (cut > 0) & (cut < length)


def training_examples_a(per_user: DataFrame, cfg: DataConfig) -> DataFrame:
    """Protocol A (user split) rows, the same as ``split_to_frame`` (row order aside).

    Training users give every prefix; valid / test users give one row: the ``max_len`` items
    before the cut as history and every later item as targets.

    Args:
        per_user: the output of ``user_sequences``.
        cfg: ``split_seed``, fractions and ``max_len``.

    Returns:
        [R] ``USER_ID``, ``SPLIT``, ``HIST_ITEM_IDS``, ``TARGET_ITEM_IDS``.
    """
    part = user_part(F.col(USER_ID), cfg)
    length = F.col(USER_LEN)
    cut = history_cut(length, cfg)
    eval_user = is_eval_user(part, cut, length)
    train_rows = _prefix_rows(per_user.where(~eval_user), cfg.max_len).select(
        USER_ID, F.lit(TRAIN).alias(SPLIT), HIST_ITEM_IDS, TARGET_ITEM_IDS
    )
    eval_rows = per_user.where(eval_user).select(
        USER_ID,
        part.alias(SPLIT),
        _window(F.col(ITEMS), cut, cfg.max_len).alias(HIST_ITEM_IDS),
        F.slice(ITEMS, cut + 1, length - cut).alias(TARGET_ITEM_IDS),
    )
    return train_rows.unionByName(eval_rows)


def example_counts(protocol: str, cfg: DataConfig) -> dict[str, Column]:
    """Aggregates over ``user_sequences`` rows: the example rows of each split of ``protocol``.

    The same numbers as counting the rows of ``training_examples_a`` / ``_b`` by ``SPLIT``,
    without reading them back (B: n - 1 rows per user, 2 of them valid / test when n >= 3; A:
    n - 1 train rows per training user, one valid or test row per evaluation user).
    """
    length = F.col(USER_LEN)
    if protocol == "B":
        both = length >= 3
        return {
            TRAIN: F.sum(F.when(both, length - 3).otherwise(length - 1)),
            VALID: F.count(F.when(both, 1)),
            TEST: F.count(F.when(both, 1)),
        }
    part = user_part(F.col(USER_ID), cfg)
    eval_user = is_eval_user(part, history_cut(length, cfg), length)
    return {
        TRAIN: F.sum(F.when(~eval_user, length - 1).otherwise(0)),
        VALID: F.count(F.when(eval_user & (part == F.lit(VALID)), 1)),
        TEST: F.count(F.when(eval_user & (part == F.lit(TEST)), 1)),
    }


def item_features(
    vocab: DataFrame,
    catalog: DataFrame | None,
    valid_from: datetime,
    build_ts: datetime,
) -> DataFrame:
    """One row per vocabulary item: index, attributes and popularity as of the build.

    Args:
        vocab: ``ITEM_ID``, ``ITEM_IDX``, ``ITEM_POPULARITY`` (every item of the append-only
            vocabulary with its number of behaviour events, see ``item_counts``).
        catalog: ``ITEM_ID``, ``ITEM_ATTRIBUTES`` (list of str), or None.
        valid_from: the rows' event timestamp (a static table: valid at every time).
        build_ts: the rows' created timestamp.
    """
    rows = _with_attributes(vocab, catalog, ITEM_ID, ITEM_ATTRIBUTES)
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
