"""The training set: the protocol's training events with the user features Feast serves for them.

Entity rows are the protocol's training events (held-out validation and test targets are never
among them), each at its stamp (``mirec.features.sequences``: ``EVENT_TS`` + rank within a tie).
Features are read through the Feast registry: for each view of the ``user_tower_v1`` service, its
batch source and feature columns, joined point-in-time in Spark with Feast's semantics (the
latest feature row with ``event_timestamp <= t``, ties broken by the latest created timestamp;
no TTL). That is one sort per view instead of the file offline store's pandas/dask join (the
list columns dominate its time) or the Spark offline store's range join (quadratic in a user's
events). The result is written as parquet and registered with Feast as a saved dataset.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from mirec.config import DataConfig
from mirec.data.vocab import Vocabulary
from mirec.errors import ConfigError, FeatureLookupError
from mirec.features import sequences as seq
from mirec.features.repo import Layout
from mirec.schema import (
    FEAST_TS,
    HIST_LEN,
    SEQ_POS,
    TARGET_ITEM_IDS,
    USER_ID,
    USER_TOWER_FS,
)

if TYPE_CHECKING:
    from feast import FeatureStore
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

SAVED_DATASET_PREFIX = "training_set"
_T, _KIND, _CREATED, _ENTITY, _VALUE = "_t", "_kind", "_created", "_entity", "_value"
_FEATURE_ROW, _ENTITY_ROW = 0, 1  # at equal times feature rows sort first: event_ts <= t


@dataclass(frozen=True)
class TrainingSetResult:
    """What ``build_training_set`` wrote.

    Attributes:
        path: the parquet folder.
        rows: training examples (one row each).
        users: users with at least one.
        empty_histories: rows without an earlier event (0 for both protocols).
        mean_hist_len: mean ``HIST_LEN``.
        saved_dataset: its name in the Feast registry.
        seconds: wall time of the join and write.
    """

    path: Path
    rows: int
    users: int
    empty_histories: int
    mean_hist_len: float
    saved_dataset: str
    seconds: float


def is_training_event(protocol: str, cfg: DataConfig) -> Column:
    """Over ``sequences.event_rows``: the event at 1-based position ``_pos`` is a training target.

    B: positions 2..n-2 of a user with n >= 3 events, 2..n otherwise (valid = n-1 and test = n
    are held out); A: positions 2..n of a training user (valid / test users are held out).

    Raises:
        ConfigError: an unknown protocol.
    """
    pos, length = F.col(seq.EVENT_POS), F.col(seq.USER_LEN)
    if protocol == "B":
        return (pos >= 2) & ((length < 3) | (pos <= length - 2))
    if protocol == "A":
        part = seq.user_part(F.col(USER_ID), cfg)
        return (pos >= 2) & ~seq.is_eval_user(part, seq.history_cut(length, cfg), length)
    raise ConfigError(f"protocol must be 'A' or 'B', got {protocol!r}")


def training_events(per_user: DataFrame, protocol: str, cfg: DataConfig) -> DataFrame:
    """The protocol's training events: who, at which stamp, which target (the entity rows).

    Args:
        per_user: the output of ``sequences.user_sequences``.
        protocol: ``"A"`` or ``"B"``.
        cfg: the protocol parameters.

    Returns:
        [R] ``USER_ID``, ``SEQ_POS``, ``FEAST_TS`` (the event's stamp), ``TARGET_ITEM_IDS``
        (its item index as a one-item list).
    """
    events = seq.event_rows(per_user).where(is_training_event(protocol, cfg))
    return events.select(
        USER_ID,
        SEQ_POS,
        F.timestamp_micros(F.col(seq.EVENT_STAMP)).alias(FEAST_TS),
        F.array(seq.EVENT_ITEM).alias(TARGET_ITEM_IDS),
    )


def _empty(field: T.StructField) -> Column:
    """What an entity row without a feature row gets: an empty list or 0."""
    if isinstance(field.dataType, T.ArrayType):
        return F.array().cast(field.dataType)
    return F.lit(0).cast(field.dataType)


def point_in_time_join(
    entities: DataFrame,
    table: DataFrame,
    *,
    join_key: str,
    features: list[str],
    timestamp_field: str,
    created_field: str | None,
) -> DataFrame:
    """Feast's point-in-time join in Spark: each entity row gets the latest feature row of its
    key with ``timestamp_field <= FEAST_TS`` (the latest created one among ties; no TTL).

    One shuffle by key and one sort of the union of both frames, O((E + F) log(E + F)); entity
    rows without a feature row get empty lists and zeros. Every entity row comes back once.

    Args:
        entities: [E] rows with ``join_key`` and ``FEAST_TS``; other columns are kept.
        table: the view's batch source.
        join_key: the view's entity key.
        features: the feature columns to take.
        timestamp_field: the source's event timestamp column.
        created_field: its created timestamp column, or None.

    Returns:
        [E] the entity columns, then ``features``.
    """
    created = F.col(created_field) if created_field else F.lit(None).cast("timestamp")
    feature_rows = table.select(
        F.col(join_key),
        F.col(timestamp_field).alias(_T),
        F.lit(_FEATURE_ROW).alias(_KIND),
        created.alias(_CREATED),
        F.struct(*features).alias(_VALUE),
    )
    entity_rows = entities.select(
        F.col(join_key),
        F.col(FEAST_TS).alias(_T),
        F.lit(_ENTITY_ROW).alias(_KIND),
        F.struct(*entities.columns).alias(_ENTITY),
    )
    rows = entity_rows.unionByName(feature_rows, allowMissingColumns=True)
    latest = (
        Window.partitionBy(join_key)
        .orderBy(_T, _KIND, _CREATED)
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    joined = rows.withColumn(_VALUE, F.last(_VALUE, ignorenulls=True).over(latest))
    joined = joined.where(F.col(_KIND) == _ENTITY_ROW)
    fields = {f.name: f for f in table.schema.fields}
    values = [
        F.coalesce(F.col(f"{_VALUE}.{name}"), _empty(fields[name])).alias(name) for name in features
    ]
    return joined.select(*[F.col(f"{_ENTITY}.{c}").alias(c) for c in entities.columns], *values)


def join_user_features(
    spark: SparkSession, store: FeatureStore, repo: Path, entities: DataFrame
) -> tuple[DataFrame, list[str]]:
    """Join every view of the ``USER_TOWER_FS`` service to ``entities``, as Feast defines them.

    Returns:
        (the joined frame, the feature references ``view:feature``).
    """
    from feast import FileSource

    refs: list[str] = []
    frame = entities
    for projection in store.get_feature_service(USER_TOWER_FS).feature_view_projections:
        view = store.get_feature_view(projection.name)
        source = view.batch_source
        features = [f.name for f in projection.features]
        if list(view.join_keys) != [USER_ID] or not isinstance(source, FileSource):
            raise FeatureLookupError(
                f"view {view.name}: expected a file source keyed by {USER_ID}, got "
                f"{type(source).__name__} keyed by {view.join_keys}"
            )
        path = Path(source.path)
        table = spark.read.parquet(str(path if path.is_absolute() else repo / path))
        frame = point_in_time_join(
            frame,
            table,
            join_key=USER_ID,
            features=features,
            timestamp_field=source.timestamp_field,
            created_field=source.created_timestamp_column or None,
        )
        refs += [f"{projection.name_to_use()}:{name}" for name in features]
    return frame, refs


def _register(
    store: FeatureStore, name: str, refs: list[str], path: Path, span: tuple[Any, Any]
) -> None:
    """Record the written training set in the Feast registry as a saved dataset.

    ``span``: the first and last ``FEAST_TS`` (Feast needs them to read the dataset back).
    """
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage
    from feast.saved_dataset import SavedDataset

    dataset = SavedDataset(
        name=name,
        features=refs,
        join_keys=[USER_ID],
        storage=SavedDatasetFileStorage(path=str(path)),
        feature_service_name=USER_TOWER_FS,
        tags={"rows": "training examples of the protocol, point-in-time"},
    )
    dataset.min_event_timestamp, dataset.max_event_timestamp = span
    store.registry.apply_saved_dataset(dataset, store.project, commit=True)


def _stats(spark: SparkSession, path: Path) -> tuple[int, int, int, float, tuple[Any, Any]]:
    """(rows, users, empty histories, mean history length, first and last ``FEAST_TS``)."""
    row = (
        spark.read.parquet(str(path))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.countDistinct(USER_ID).alias("users"),
            F.count(F.when(F.col(HIST_LEN) == 0, 1)).alias("empty"),
            F.avg(HIST_LEN).alias("mean"),
            F.min(FEAST_TS).alias("first"),
            F.max(FEAST_TS).alias("last"),
        )
        .first()
    )
    if row is None:
        return 0, 0, 0, 0.0, (None, None)
    span = (row["first"], row["last"])
    return int(row["rows"]), int(row["users"]), int(row["empty"]), float(row["mean"] or 0.0), span


def partitions_for_events(spark: SparkSession, events_path: str | Path) -> int:
    """The feature build's choice of shuffle partitions for this event log."""
    from mirec.features.build import DEFAULT_SHUFFLE_PARTITIONS, input_bytes, shuffle_partitions_for

    size = input_bytes(events_path)
    if size is None:
        return DEFAULT_SHUFFLE_PARTITIONS
    return shuffle_partitions_for(size, spark.sparkContext.defaultParallelism)


def build_training_set(
    repo: str | Path,
    events_path: str | Path,
    out: str | Path,
    cfg: DataConfig,
    *,
    spark: SparkSession | None = None,
    shuffle_partitions: int | None = None,
) -> TrainingSetResult:
    """Write the protocol's training examples with their point-in-time user features.

    Args:
        repo: the rendered, applied Feast repository of the feature build (its vocabulary
            encodes the targets).
        events_path: the canonical events the build read (parquet file or folder).
        out: the parquet folder to write (replaced).
        cfg: the protocol (``protocol``, split seed and fractions).
        spark: a session (default: ``get_spark``).
        shuffle_partitions: partitions of the per-user shuffle (default: from the events'
            size, as the feature build picks them; Spark's fixed 200 costs a task and a file
            each at every size).

    Returns:
        Counts and the saved dataset's name.
    """
    from mirec.features import feast_io
    from mirec.features.build import SHUFFLE_PARTITIONS_KEY, session_conf, vocab_frame

    started = time.perf_counter()
    root, target = Path(repo).resolve(), Path(out)
    if spark is None:
        from mirec.features.spark_session import get_spark

        spark = get_spark()
    store = feast_io.open_store(root)
    vocab = vocab_frame(spark, Vocabulary.load(Layout(root).vocab))
    partitions = shuffle_partitions or partitions_for_events(spark, events_path)
    with session_conf(spark, SHUFFLE_PARTITIONS_KEY, str(partitions)):
        events = spark.read.parquet(str(events_path))
        per_user = seq.user_sequences(seq.encode_items(seq.behaviour_events(events), vocab))
        entities = training_events(per_user, cfg.protocol, cfg)
        frame, refs = join_user_features(spark, store, root, entities)
        writer = frame.write.mode("overwrite").option("parquet.enable.dictionary", "false")
        writer.parquet(str(target))
    rows, users, empty, mean, span = _stats(spark, target)
    name = f"{SAVED_DATASET_PREFIX}_{cfg.protocol.lower()}"
    _register(store, name, refs, target.resolve(), span)
    seconds = round(time.perf_counter() - started, 3)
    logger.info("training set: %d rows, %d users in %.1f s -> %s", rows, users, seconds, target)
    return TrainingSetResult(target, rows, users, empty, mean, name, seconds)
