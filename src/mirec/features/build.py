"""The ``build`` step: canonical events -> Spark -> feature tables, examples and vocabulary.

Input is a loaded dataset (``build_dataset``) or a canonical event parquet (``build_features``);
everything is written into a feature workdir (``mirec.features.repo.Layout``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mirec.config import DataConfig
from mirec.data.events import Dataset, write_events_parquet
from mirec.data.vocab import Vocabulary
from mirec.errors import ConfigError
from mirec.features import sequences as seq
from mirec.features.checks import (
    ITEM_FEATURES_SUITE,
    TRAINING_FRAME_SUITE,
    USER_SEQUENCES_SUITE,
    EventValidator,
    TableChecker,
)
from mirec.features.repo import Layout
from mirec.schema import (
    DEFAULT_MAX_LEN,
    ITEM_ATTRIBUTES,
    ITEM_FEATURES_FV,
    ITEM_ID,
    ITEM_IDX,
    MIN_EVENT_TS,
    NUM_EVENTS,
    ROW_KIND,
    SPLIT,
    USER_ATTRIBUTES,
    USER_HISTORY_FV,
    USER_ID,
    USER_PROFILE_FV,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

PROTOCOLS = ("A", "B")


@dataclass(frozen=True)
class FeatureBuildConfig:
    """Settings of one feature build.

    Attributes:
        hist_len: N, the items kept in each snapshot.
        protocols: which training examples to write (``"A"``, ``"B"``).
        data: protocol parameters (``max_len``, split seed and fractions, bad-row tolerance).
        master: Spark master (default ``$MIREC_SPARK_MASTER`` or ``local[*]``).
        driver_memory: Spark driver heap, e.g. ``"8g"``.
        spark_conf: extra Spark settings.
    """

    hist_len: int = DEFAULT_MAX_LEN
    protocols: tuple[str, ...] = ("B",)
    data: DataConfig = DataConfig()
    master: str | None = None
    driver_memory: str | None = None
    spark_conf: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hist_len < 1:
            raise ConfigError(f"hist_len must be >= 1, got {self.hist_len}")
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise ConfigError(f"protocols must be among {PROTOCOLS}, got {unknown}")


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote.

    Attributes:
        layout: the workdir layout.
        build_ts: the build time (UTC, microseconds).
        manifest: counts, timings and paths (also in ``layout.manifest``).
    """

    layout: Layout
    build_ts: datetime
    manifest: dict[str, Any]


class _Timer:
    """Wall seconds per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        logger.info("%s: %.1f s", name, self.seconds[name])


def write_catalog(table: pd.DataFrame | None, key: str, column: str, path: Path) -> Path | None:
    """Write an items / users table (key + list[str] attributes) as parquet; None when absent."""
    if table is None or key not in table.columns:
        return None
    attrs = table[column] if column in table.columns else pd.Series([[]] * len(table))
    frame = pd.DataFrame(
        {key: table[key].astype(str).to_numpy(), column: [_tokens(v) for v in attrs]}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(key, pa.string()), (column, pa.list_(pa.string()))])
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), str(path))
    return path


def _tokens(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(v) for v in value]  # type: ignore[attr-defined]


def update_vocabulary(
    events: DataFrame, catalog: DataFrame | None, path: Path
) -> tuple[Vocabulary, int]:
    """Extend the vocabulary at ``path`` (or build one) with every item id seen; save it.

    Item ids come from all events (any type) and the catalog, as ``mirec.train.prepare`` does.

    Returns:
        (vocabulary, number of new ids).
    """
    ids = events.select(ITEM_ID).where(events[ITEM_ID].isNotNull())
    if catalog is not None:
        ids = ids.unionByName(catalog.select(ITEM_ID))
    distinct: pd.DataFrame = ids.distinct().toPandas()
    found = distinct[ITEM_ID].astype(str).to_numpy()
    old = Vocabulary.load(path) if path.is_file() else None
    vocab = Vocabulary.build(found) if old is None else old.extend(found)
    vocab.save(path)
    added = vocab.size - (old.size if old is not None else 0)
    logger.info(
        "vocabulary: %d items (%d new), fingerprint %s", vocab.size, added, vocab.fingerprint
    )
    return vocab, added


def vocab_frame(spark: SparkSession, vocab: Vocabulary) -> DataFrame:
    """The vocabulary as a Spark frame (``ITEM_ID`` str, ``ITEM_IDX`` int64 1..N)."""
    frame = pd.DataFrame(
        {ITEM_ID: np.asarray(vocab.ids, dtype=object), ITEM_IDX: np.arange(1, vocab.size + 1)}
    )
    return spark.createDataFrame(frame, schema=f"{ITEM_ID} string, {ITEM_IDX} long")


def _write(df: DataFrame, path: Path, partition_by: str | None = None) -> None:
    writer = df.write.mode("overwrite")
    if partition_by is not None:
        writer = writer.partitionBy(partition_by)
    writer.parquet(str(path))


def _history_stats(spark: SparkSession, layout: Layout, hist_len: int) -> dict[str, int]:
    """Counts over the written user-history partitions (row counts come from parquet footers)."""
    from pyspark.sql import functions as F

    snapshots = spark.read.parquet(str(layout.event_history)).count()
    stats = (
        spark.read.parquet(str(layout.latest_history))
        .agg(
            F.count(F.lit(1)).alias("users"),
            F.count(F.when(F.col(NUM_EVENTS) > hist_len, 1)).alias("truncated_users"),
            F.max(NUM_EVENTS).alias("longest_history"),
        )
        .first()
    )
    counts = {k: int(v or 0) for k, v in stats.asDict().items()} if stats else {}
    return {"snapshot_rows": int(snapshots), **counts}


def _split_counts(spark: SparkSession, path: Path) -> dict[str, int]:
    rows = spark.read.parquet(str(path)).groupBy(SPLIT).count().collect()
    return {str(r[SPLIT]): int(r["count"]) for r in sorted(rows, key=lambda r: str(r[SPLIT]))}


def _write_examples(
    spark: SparkSession,
    layout: Layout,
    cfg: FeatureBuildConfig,
    ordered: DataFrame,
    encoded: DataFrame,
    timer: _Timer,
) -> dict[str, dict[str, int]]:
    """Write the training examples of each protocol; their row counts per split."""
    examples: dict[str, dict[str, int]] = {}
    for protocol in cfg.protocols:
        path = layout.training_examples(protocol)
        with timer.stage(f"training_examples_{protocol.lower()}"):
            if protocol == "B":
                _write(seq.training_examples_b(ordered), path)
            else:
                _write(seq.training_examples_a(ordered, encoded, cfg.data), path)
        examples[protocol] = _split_counts(spark, path)
    return examples


def _read_catalog(spark: SparkSession, path: Path | None) -> DataFrame | None:
    return spark.read.parquet(str(path)) if path is not None else None


def build_features(
    events_path: str | Path,
    workdir: str | Path,
    *,
    items_path: Path | None = None,
    users_path: Path | None = None,
    cfg: FeatureBuildConfig | None = None,
    spark: SparkSession | None = None,
    validate: EventValidator | None = None,
    check_tables: TableChecker | None = None,
    now: datetime | None = None,
) -> BuildResult:
    """Run the Spark job on a canonical event log and write every output into ``workdir``.

    Outputs (parquet, UTC TIMESTAMP_MICROS, under ``Layout.data``): ``user_history`` (snapshot
    rows + one "as of build" row per user, see ``mirec.features.sequences``),
    ``training_examples_{a,b}`` (as ``split_to_frame``), ``item_features``, ``user_profile``;
    plus ``vocab.json`` (extended when one exists) and ``build_manifest.json``.

    Args:
        events_path: canonical events (parquet file or folder).
        workdir: the feature workdir (a Feast repository once rendered).
        items_path: item catalog parquet (``ITEM_ID``, ``ITEM_ATTRIBUTES``), or None.
        users_path: user profile parquet (``USER_ID``, ``USER_ATTRIBUTES``), or None.
        cfg: build settings.
        spark: a session to use (default: ``get_spark`` with ``cfg``'s master and memory).
        validate: hook applied to the raw events first (``checks.quarantine_validator``).
        check_tables: hook run on every written table (``checks.suite_checker``).
        now: the build time (default: now, UTC).
    """
    cfg = cfg or FeatureBuildConfig()
    layout = Layout(Path(workdir).resolve())
    layout.data.mkdir(parents=True, exist_ok=True)
    build_ts = (now or datetime.now(UTC)).astimezone(UTC)
    if spark is None:
        from mirec.features.spark_session import get_spark

        spark = get_spark(cfg.master, driver_memory=cfg.driver_memory, conf=cfg.spark_conf)
    timer = _Timer()
    counts: dict[str, Any] = {}
    with timer.stage("read_validate"):
        events = spark.read.parquet(str(events_path))
        if validate is not None:
            events = validate(events)
    items, users = _read_catalog(spark, items_path), _read_catalog(spark, users_path)
    with timer.stage("vocabulary"):
        vocab, counts["new_items"] = update_vocabulary(events, items, layout.vocab)
        vocab_df = vocab_frame(spark, vocab)
    behaviour = seq.behaviour_events(events)
    encoded = seq.encode_items(behaviour, vocab_df)
    ordered = seq.ordered_events(encoded, cfg.hist_len, cfg.data.max_len)
    with timer.stage("user_history"):
        _write(
            seq.user_history_rows(ordered, cfg.hist_len, build_ts),
            layout.table(USER_HISTORY_FV),
            partition_by=ROW_KIND,
        )
    counts.update(_history_stats(spark, layout, cfg.hist_len))
    examples = _write_examples(spark, layout, cfg, ordered, encoded, timer)
    with timer.stage("item_and_user_tables"):
        item_rows = seq.item_features(vocab_df, behaviour, items, MIN_EVENT_TS, build_ts)
        _write(item_rows.coalesce(4), layout.table(ITEM_FEATURES_FV))
        profile_rows = seq.user_profiles(events, users, MIN_EVENT_TS, build_ts)
        _write(profile_rows, layout.table(USER_PROFILE_FV))
    if check_tables is not None:
        with timer.stage("table_suites"):
            _check_outputs(spark, layout, cfg, vocab.size, check_tables)
    manifest = {
        "build_ts": build_ts.isoformat(),
        "events": str(events_path),
        "hist_len": cfg.hist_len,
        "data_config": cfg.data.model_dump(),
        "protocols": list(cfg.protocols),
        "vocab_size": vocab.size,
        "vocab_fingerprint": vocab.fingerprint,
        "counts": counts,
        "training_examples": examples,
        "seconds": timer.seconds,
        "spark": {"version": spark.version, "master": spark.sparkContext.master},
        "validated": {"events": validate is not None, "tables": check_tables is not None},
    }
    layout.manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    logger.info("feature build done in %.1f s: %s", sum(timer.seconds.values()), counts)
    return BuildResult(layout, build_ts, manifest)


def _check_outputs(
    spark: SparkSession,
    layout: Layout,
    cfg: FeatureBuildConfig,
    vocab_size: int,
    check: TableChecker,
) -> None:
    """Run the table suites on what the build wrote (each raises when its suite fails)."""
    check(
        USER_SEQUENCES_SUITE,
        spark.read.parquet(str(layout.table(USER_HISTORY_FV))),
        cfg.hist_len,
        vocab_size,
    )
    check(
        ITEM_FEATURES_SUITE,
        spark.read.parquet(str(layout.table(ITEM_FEATURES_FV))),
        cfg.hist_len,
        vocab_size,
    )
    for protocol in cfg.protocols:
        examples = spark.read.parquet(str(layout.training_examples(protocol)))
        check(TRAINING_FRAME_SUITE, examples, cfg.data.max_len, vocab_size)


def build_dataset(dataset: Dataset, workdir: str | Path, **kwargs: Any) -> BuildResult:
    """Write a loaded dataset's canonical events and catalogs into ``workdir``, then build.

    Args:
        dataset: events, items and users (``mirec.data.loaders.load_dataset``).
        workdir: the feature workdir.
        **kwargs: passed to ``build_features`` (``cfg``, ``spark``, ``validate``,
            ``check_tables``, ``now``).
    """
    layout = Layout(Path(workdir).resolve())
    write_events_parquet(dataset.events, layout.events)
    items = write_catalog(dataset.items, ITEM_ID, ITEM_ATTRIBUTES, layout.catalog_items)
    users = write_catalog(dataset.users, USER_ID, USER_ATTRIBUTES, layout.catalog_users)
    return build_features(layout.events, layout.root, items_path=items, users_path=users, **kwargs)
