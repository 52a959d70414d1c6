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
from mirec.errors import ConfigError, DataValidationError
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
    ITEM_POPULARITY,
    MIN_EVENT_TS,
    ROW_KIND,
    SPLITS,
    USER_ATTRIBUTES,
    USER_HISTORY_FV,
    USER_ID,
    USER_PROFILE_FV,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

PROTOCOLS = ("A", "B")
SHUFFLE_PARTITIONS_KEY = "spark.sql.shuffle.partitions"
DEFAULT_SHUFFLE_PARTITIONS = 200  # Spark's own default
# Event parquet per shuffle partition (~2.3 * 10^6 synthetic events).
SHUFFLE_INPUT_BYTES = 32 * 2**20


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
        shuffle_partitions: partitions of the build's shuffles (default:
            ``spark.sql.shuffle.partitions`` of ``spark_conf`` when set there, else derived
            from the size of the event parquet by ``shuffle_partitions_for``).
    """

    hist_len: int = DEFAULT_MAX_LEN
    protocols: tuple[str, ...] = ("B",)
    data: DataConfig = DataConfig()
    master: str | None = None
    driver_memory: str | None = None
    spark_conf: Mapping[str, str] = field(default_factory=dict)
    shuffle_partitions: int | None = None

    def __post_init__(self) -> None:
        if self.hist_len < 1:
            raise ConfigError(f"hist_len must be >= 1, got {self.hist_len}")
        if self.shuffle_partitions is not None and self.shuffle_partitions < 1:
            raise ConfigError(f"shuffle_partitions must be >= 1, got {self.shuffle_partitions}")
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


def update_vocabulary(ids: np.ndarray, path: Path) -> tuple[Vocabulary, int]:
    """Extend the vocabulary at ``path`` (or build one) with every item id seen; save it.

    Args:
        ids: [I] str item ids from all events (any type) and the catalog, as
            ``mirec.training.prepare`` takes them (``sequences.item_counts``).
        path: the vocabulary file.

    Returns:
        (vocabulary, number of new ids).
    """
    old = Vocabulary.load(path) if path.is_file() else None
    vocab = Vocabulary.build(ids) if old is None else old.extend(ids)
    vocab.save(path)
    added = vocab.size - (old.size if old is not None else 0)
    logger.info(
        "vocabulary: %d items (%d new), fingerprint %s", vocab.size, added, vocab.fingerprint
    )
    return vocab, added


def vocab_frame(
    spark: SparkSession, vocab: Vocabulary, popularity: pd.Series | None = None
) -> DataFrame:
    """The vocabulary as a Spark frame (``ITEM_ID`` str, ``ITEM_IDX`` int64 1..N).

    Args:
        spark: the session.
        vocab: the vocabulary.
        popularity: behaviour events per item id (str index); when given, the frame gets an
            ``ITEM_POPULARITY`` int64 column (0 for items without one).
    """
    frame = pd.DataFrame(
        {ITEM_ID: np.asarray(vocab.ids, dtype=object), ITEM_IDX: np.arange(1, vocab.size + 1)}
    )
    schema = f"{ITEM_ID} string, {ITEM_IDX} long"
    if popularity is not None:
        counts = popularity.reindex(frame[ITEM_ID], fill_value=0).fillna(0)
        frame[ITEM_POPULARITY] = counts.to_numpy(dtype=np.int64)
        schema += f", {ITEM_POPULARITY} long"
    return spark.createDataFrame(frame, schema=schema)


def _vocabulary(
    spark: SparkSession, events: DataFrame, catalog: DataFrame | None, path: Path
) -> tuple[Vocabulary, int, DataFrame]:
    """One pass over the item ids: (vocabulary, new ids, vocabulary frame with popularity)."""
    found: pd.DataFrame = seq.item_counts(events, catalog).toPandas()
    ids = found[ITEM_ID].astype(str)
    vocab, added = update_vocabulary(ids.to_numpy(), path)
    counts = found[ITEM_POPULARITY].fillna(0).astype(np.int64).to_numpy()
    popularity = pd.Series(counts, index=ids.to_numpy()).groupby(level=0).sum()
    return vocab, added, vocab_frame(spark, vocab, popularity)


def _write(
    df: DataFrame, path: Path, partition_by: str | None = None, dictionary: bool = True
) -> None:
    """Overwrite ``path`` with ``df`` as parquet (hive partitions by ``partition_by``).

    ``dictionary=False`` turns parquet dictionary encoding off: on the int64 lists of the
    history and example tables it took ~30% of the write time for files only ~5% smaller
    (snappy already finds the overlap between consecutive rows' windows).
    """
    writer = df.write.mode("overwrite")
    if not dictionary:
        writer = writer.option("parquet.enable.dictionary", "false")
    if partition_by is not None:
        writer = writer.partitionBy(partition_by)
    writer.parquet(str(path))


def _sequence_counts(
    per_user: DataFrame, cfg: FeatureBuildConfig
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """User-history counts and example rows per protocol and split, in one small job.

    Computed from the per-user frame (the job also fills its cache) instead of reading the
    written tables back; splits without rows are left out, as a count of the rows would.

    Returns:
        ({snapshot_rows, users, truncated_users, longest_history}, {protocol: {split: rows}}).
    """
    from pyspark.sql import functions as F

    length = F.col(seq.USER_LEN)
    columns = {
        "snapshot_rows": F.sum(length),
        "users": F.count(F.lit(1)),
        "truncated_users": F.count(F.when(length > cfg.hist_len, 1)),
        "longest_history": F.max(length),
        "stamp_collisions": F.count(F.when(seq.stamps_collide(F.col(seq.TIMES), length), 1)),
    }
    for protocol in cfg.protocols:
        for split, column in seq.example_counts(protocol, cfg.data).items():
            columns[f"{protocol}_{split}"] = column
    row = per_user.agg(*[column.alias(name) for name, column in columns.items()]).first()
    values = {name: int((row[name] if row else 0) or 0) for name in columns}
    _require_increasing_stamps(values["stamp_collisions"])
    history = {name: values[name] for name in list(columns)[:4]}
    examples = {
        protocol: {
            split: values[f"{protocol}_{split}"]
            for split in sorted(SPLITS)
            if values[f"{protocol}_{split}"] > 0
        }
        for protocol in cfg.protocols
    }
    return history, examples


def _require_increasing_stamps(users: int) -> None:
    """Fail when some users' event stamps would not increase (``sequences.stamps_collide``)."""
    if users:
        raise DataValidationError(
            f"{users} users have a tie of m events at one timestamp followed by their next "
            "event less than m microseconds later: the feature store could not order their "
            "events (event_timestamp = EVENT_TS + rank within the tie); deduplicate the tied "
            "events or give them distinct timestamps"
        )


def shuffle_partitions_for(input_bytes: int, parallelism: int) -> int:
    """Partitions of the per-user shuffle: one per ``SHUFFLE_INPUT_BYTES`` of event parquet.

    Rounded up to a multiple of ``parallelism`` (at least one round): a 10^6-event log (~14 MB)
    gets one partition per core instead of Spark's fixed 200 (each partition is a task and an
    output file per table; a cached frame keeps all of them), 10^8 events (~1.4 GB) about 40.
    """
    cores = max(parallelism, 1)
    wanted = max(-(-input_bytes // SHUFFLE_INPUT_BYTES), 1)
    return -(-wanted // cores) * cores


def input_bytes(path: str | Path) -> int | None:
    """Size of a local parquet file or folder (hidden ``_*`` / ``.*`` files aside), else None."""
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    if not root.is_dir():
        return None
    files = (f for f in root.rglob("*") if f.is_file() and not f.name.startswith(("_", ".")))
    return sum(f.stat().st_size for f in files)


def _shuffle_partitions(spark: SparkSession, cfg: FeatureBuildConfig, events: str | Path) -> int:
    """The shuffle partitions of this build (config, else derived from the input size)."""
    if cfg.shuffle_partitions is not None:
        return cfg.shuffle_partitions
    configured = cfg.spark_conf.get(SHUFFLE_PARTITIONS_KEY)
    if configured is not None:
        return int(configured)
    size = input_bytes(events)
    if size is None:
        return int(spark.conf.get(SHUFFLE_PARTITIONS_KEY) or DEFAULT_SHUFFLE_PARTITIONS)
    return shuffle_partitions_for(size, spark.sparkContext.defaultParallelism)


@contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """Set a runtime SQL setting of ``spark`` for a block; the earlier value comes back after."""
    before = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def _write_examples(
    layout: Layout, cfg: FeatureBuildConfig, per_user: DataFrame, timer: _Timer
) -> None:
    """Write the training examples of each protocol."""
    for protocol in cfg.protocols:
        with timer.stage(f"training_examples_{protocol.lower()}"):
            if protocol == "B":
                rows = seq.training_examples_b(per_user, cfg.data.max_len)
            else:
                rows = seq.training_examples_a(per_user, cfg.data)
            _write(rows, layout.training_examples(protocol), dictionary=False)


def _write_sequences(
    layout: Layout,
    cfg: FeatureBuildConfig,
    encoded: DataFrame,
    build_ts: datetime,
    counts: dict[str, Any],
    timer: _Timer,
) -> dict[str, dict[str, int]]:
    """Group the events per user once (cached), then write user history and training examples.

    Returns:
        Example rows per protocol and split; ``counts`` gets the user-history counts.
    """
    per_user = seq.user_sequences(encoded).persist()
    try:
        with timer.stage("user_sequences"):
            history, examples = _sequence_counts(per_user, cfg)  # the job fills the cache
        counts.update(history)
        with timer.stage("user_history"):
            _write(
                seq.user_history_rows(per_user, cfg.hist_len, build_ts),
                layout.table(USER_HISTORY_FV),
                partition_by=ROW_KIND,
                dictionary=False,
            )
        _write_examples(layout, cfg, per_user, timer)
    finally:
        per_user.unpersist()
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
    partitions = _shuffle_partitions(spark, cfg, events_path)
    with session_conf(spark, SHUFFLE_PARTITIONS_KEY, str(partitions)):
        with timer.stage("read_validate"):
            events = spark.read.parquet(str(events_path))
            if validate is not None:
                events = validate(events)
        items, users = _read_catalog(spark, items_path), _read_catalog(spark, users_path)
        with timer.stage("vocabulary"):
            vocab, counts["new_items"], vocab_df = _vocabulary(spark, events, items, layout.vocab)
        encoded = seq.encode_items(seq.behaviour_events(events), vocab_df)
        examples = _write_sequences(layout, cfg, encoded, build_ts, counts, timer)
        with timer.stage("item_and_user_tables"):
            item_rows = seq.item_features(vocab_df, items, MIN_EVENT_TS, build_ts)
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
        "spark": {
            "version": spark.version,
            "master": spark.sparkContext.master,
            "shuffle_partitions": partitions,
        },
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
