"""The Spark feature job against in-memory references: splits, snapshots, long users, vocabulary."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mirec.config import DataConfig
from mirec.data.events import Dataset, make_events, write_events_parquet
from mirec.data.splits import make_split, split_to_frame
from mirec.data.synthetic import generate
from mirec.data.vocab import Vocabulary
from mirec.errors import DataValidationError
from mirec.features import sequences as seq
from mirec.features.build import (
    FeatureBuildConfig,
    build_dataset,
    build_features,
    shuffle_partitions_for,
    vocab_frame,
)
from mirec.features.repo import Layout
from mirec.schema import (
    EVENT_IMPRESSION,
    EVENT_TS,
    EVENT_TYPE,
    FEAST_TS,
    HIST_ITEM_IDS,
    HIST_LEN,
    HIST_TS,
    ITEM_FEATURES_FV,
    ITEM_ID,
    ITEM_IDX,
    ITEM_POPULARITY,
    NUM_EVENTS,
    REASON,
    SEQ_POS,
    SPLIT,
    USER_HISTORY_FV,
    USER_ID,
)
from tests.integration.features_helpers import (
    T0,
    example_counter,
    reference_before,
    tied_events,
)

pytestmark = [pytest.mark.integration, pytest.mark.spark]
TINY = {"num_users": 200, "num_items": 120, "num_clusters": 4, "mean_len": 12, "seed": 0}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """One local[2] session for the module (kept alive for the next Spark module)."""
    from mirec.features.spark_session import get_spark

    yield get_spark("local[2]", driver_memory="2g", conf={"spark.sql.shuffle.partitions": "4"})


def spark_examples(
    spark: object, dataset: Dataset, vocab: Vocabulary, cfg: DataConfig
) -> pd.DataFrame:
    """The Spark training examples of ``cfg.protocol`` for ``dataset`` (no files written)."""
    events = spark.createDataFrame(dataset.events)  # type: ignore[attr-defined]
    encoded = seq.encode_items(seq.behaviour_events(events), vocab_frame(spark, vocab))
    per_user = seq.user_sequences(encoded)
    if cfg.protocol == "B":
        return seq.training_examples_b(per_user, cfg.max_len).toPandas()
    return seq.training_examples_a(per_user, cfg).toPandas()


@pytest.mark.parametrize("protocol,max_len", [("A", 7), ("B", 50)])
def test_examples_equal_split_to_frame_on_synthetic(
    spark: object, protocol: str, max_len: int
) -> None:
    dataset = generate(**TINY)
    vocab = Vocabulary.build(dataset.items[ITEM_ID])
    cfg = DataConfig(protocol=protocol, max_len=max_len)
    expected = split_to_frame(make_split(dataset, vocab, cfg))
    got = spark_examples(spark, dataset, vocab, cfg)
    assert len(got) == len(expected) > 1000
    assert example_counter(got) == example_counter(expected)


@pytest.mark.parametrize("protocol", ["A", "B"])
def test_examples_equal_split_to_frame_on_ml100k(
    spark: object, shared_data: Path, protocol: str
) -> None:
    from mirec.data.loaders import load_dataset

    dataset = load_dataset(shared_data / "ml-100k")
    vocab = Vocabulary.build(pd.concat([dataset.events[ITEM_ID], dataset.items[ITEM_ID]]))
    cfg = DataConfig(protocol=protocol)
    expected = split_to_frame(make_split(dataset, vocab, cfg))
    got = spark_examples(spark, dataset, vocab, cfg)
    assert len(got) == len(expected) > 50_000
    assert example_counter(got) == example_counter(expected)


@pytest.fixture(scope="module")
def tied_build(
    spark: object, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Layout, pd.DataFrame]:
    """A full build of the tied-timestamp log with N = 2."""
    events = tied_events()
    path = tmp_path_factory.mktemp("tied") / "events.parquet"
    write_events_parquet(events, path)
    cfg = FeatureBuildConfig(hist_len=2, protocols=("A", "B"))
    result = build_features(path, path.parent / "wd", cfg=cfg, spark=spark, now=NOW)
    return result.layout, events


def test_snapshots_hold_the_events_before_in_event_order(
    tied_build: tuple[Layout, pd.DataFrame],
) -> None:
    layout, events = tied_build
    vocab = Vocabulary.load(layout.vocab)
    rows = pd.read_parquet(layout.table(USER_HISTORY_FV))
    snapshots = rows[rows[SEQ_POS].notna()]
    behaviour = events[events[EVENT_TYPE] != EVENT_IMPRESSION]
    assert len(snapshots) == len(behaviour)  # one row per (user, behaviour event)
    for row in snapshots.itertuples(index=False):
        user, pos = getattr(row, USER_ID), int(getattr(row, SEQ_POS))
        items, stamps, stamp = reference_before(events, vocab, user, pos, 2)
        assert list(getattr(row, HIST_ITEM_IDS)) == items
        assert list(getattr(row, HIST_TS)) == stamps
        assert getattr(row, FEAST_TS).value // 1000 == stamp  # EVENT_TS + rank within the tie
        assert getattr(row, HIST_LEN) == len(items)
    # u1 (N = 2): c, b at t; d, a at t+1h. a's snapshot holds b and its tied predecessor d.
    u1 = snapshots[snapshots[USER_ID] == "u1"].set_index(SEQ_POS)
    assert vocab.decode(u1.loc[7, HIST_ITEM_IDS]).tolist() == ["b", "d"]
    assert vocab.decode(u1.loc[5, HIST_ITEM_IDS]).tolist() == ["c", "b"]
    assert (u1.loc[5, NUM_EVENTS], u1.loc[7, NUM_EVENTS]) == (2, 3)
    assert u1.loc[7, FEAST_TS] - u1.loc[5, FEAST_TS] == pd.Timedelta(microseconds=1)


def test_colliding_stamps_fail_the_build(spark: object, tmp_path: Path) -> None:
    """Two events at t and the next 1 µs later: the stamps t, t + 1 µs, t + 1 µs collide."""
    tick = timedelta(microseconds=1)
    events = make_events(["u", "u", "u"], ["a", "b", "c"], [T0, T0, T0 + tick])
    write_events_parquet(events, tmp_path / "events.parquet")
    with pytest.raises(DataValidationError, match="1 users have a tie"):
        build_features(tmp_path / "events.parquet", tmp_path / "wd", spark=spark, now=NOW)


def test_as_of_build_rows_hold_everything(tied_build: tuple[Layout, pd.DataFrame]) -> None:
    layout, _ = tied_build
    vocab = Vocabulary.load(layout.vocab)
    rows = pd.read_parquet(layout.table(USER_HISTORY_FV))
    latest = rows[rows[SEQ_POS].isna()].set_index(USER_ID)
    assert sorted(latest.index) == ["10", "u1", "u2"]
    assert vocab.decode(latest.loc["u1", HIST_ITEM_IDS]).tolist() == ["e", "a"]  # last N = 2
    assert latest.loc["u1", NUM_EVENTS] == 6 and latest.loc["u1", HIST_LEN] == 2
    assert (latest[FEAST_TS] >= pd.Timestamp(NOW)).all()
    assert (rows.loc[rows[SEQ_POS].notna(), FEAST_TS] < pd.Timestamp(NOW)).all()
    assert str(rows[FEAST_TS].dtype) == "datetime64[us, UTC]"  # TIMESTAMP_MICROS, UTC


def test_long_history_user_is_kept_truncated_and_counted(spark: object, tmp_path: Path) -> None:
    heavy = 100_000
    start = datetime(2023, 1, 1, tzinfo=UTC)
    users = ["heavy"] * heavy + ["light"] * 3
    items = [str(i % 997) for i in range(heavy)] + ["1", "2", "3"]
    stamps = [start + timedelta(seconds=i) for i in range(heavy)] + [start] * 3
    path = tmp_path / "events.parquet"
    write_events_parquet(make_events(users, items, stamps), path)
    result = build_features(path, tmp_path / "wd", cfg=FeatureBuildConfig(), spark=spark, now=NOW)
    counts = result.manifest["counts"]
    assert counts["snapshot_rows"] == heavy + 3 and counts["users"] == 2
    assert counts["truncated_users"] == 1 and counts["longest_history"] == heavy
    rows = pd.read_parquet(result.layout.table(USER_HISTORY_FV), filters=[(USER_ID, "=", "heavy")])
    assert rows[HIST_LEN].max() == 50
    latest = rows[rows[SEQ_POS].isna()].iloc[0]
    vocab = Vocabulary.load(result.layout.vocab)
    assert latest[NUM_EVENTS] == heavy
    assert vocab.decode(latest[HIST_ITEM_IDS]).tolist() == items[heavy - 50 : heavy]
    assert result.manifest["training_examples"]["B"]["train"] == heavy - 3


def test_vocabulary_is_extended_append_only(spark: object, tmp_path: Path) -> None:
    first = make_events(
        ["u", "u", "v"], ["10", "2", "7"], [NOW - timedelta(days=d) for d in (3, 2, 1)]
    )
    second = make_events(
        ["u", "w"], ["1", "10"], [NOW - timedelta(hours=5), NOW - timedelta(hours=4)]
    )
    workdir = tmp_path / "wd"
    for number, events in enumerate((first, second)):
        path = tmp_path / f"events_{number}.parquet"
        write_events_parquet(events, path)
        result = build_features(path, workdir, cfg=FeatureBuildConfig(), spark=spark, now=NOW)
    vocab = Vocabulary.load(workdir / "vocab.json")
    assert vocab.ids == ("2", "7", "10", "1")  # numeric sort first, new ids appended
    assert result.manifest["counts"]["new_items"] == 1
    table = pd.read_parquet(result.layout.table(ITEM_FEATURES_FV)).set_index(ITEM_ID)
    assert table.loc["1", ITEM_IDX] == 4 and table.loc["10", ITEM_IDX] == 3
    assert table.loc["10", ITEM_POPULARITY] == 1 and table.loc["2", ITEM_POPULARITY] == 0


def test_build_dataset_writes_every_table(spark: object, tmp_path: Path) -> None:
    dataset = generate(**TINY)
    cfg = FeatureBuildConfig(protocols=("A", "B"), data=DataConfig(max_len=7))
    result = build_dataset(dataset, tmp_path / "wd", cfg=cfg, spark=spark, now=NOW)
    layout = result.layout
    events = pd.read_parquet(layout.events)
    assert str(events[EVENT_TS].dtype) == "datetime64[us, UTC]"
    items = pd.read_parquet(layout.table(ITEM_FEATURES_FV))
    assert len(items) == result.manifest["vocab_size"] == len(dataset.items)
    assert np.array_equal(np.sort(items[ITEM_IDX].to_numpy()), np.arange(1, len(items) + 1))
    assert items[ITEM_POPULARITY].sum() == len(dataset.events)
    assert result.manifest["counts"]["users"] == dataset.events[USER_ID].nunique()
    # The manifest's counts are computed, not read back: they match the written tables.
    history = pd.read_parquet(layout.table(USER_HISTORY_FV))
    assert result.manifest["counts"]["snapshot_rows"] == history[SEQ_POS].notna().sum()
    assert result.manifest["spark"]["shuffle_partitions"] >= 1
    for protocol in ("A", "B"):
        rows = pd.read_parquet(layout.training_examples(protocol))
        assert rows[HIST_ITEM_IDS].map(len).max() == 7
        split_rows = rows[SPLIT].value_counts().sort_index().to_dict()
        assert result.manifest["training_examples"][protocol] == split_rows


def test_validation_hooks_quarantine_bad_rows_and_check_tables(
    spark: object, tmp_path: Path
) -> None:
    from mirec.features.checks import quarantine_validator, suite_checker

    good = tied_events()
    bad = make_events(
        [None, "u1", "u2"],
        ["a", "zz", "b"],
        [T0, NOW + timedelta(days=30), T0 + timedelta(hours=1)],  # u2's row is a duplicate
        seq_pos=[20, 21, 22],
    )
    path = tmp_path / "events.parquet"
    write_events_parquet(pd.concat([good, bad], ignore_index=True), path)
    workdir = tmp_path / "wd"
    result = build_features(
        path,
        workdir,
        cfg=FeatureBuildConfig(protocols=("A", "B")),
        spark=spark,
        now=NOW,
        validate=quarantine_validator(workdir, now=NOW, max_bad_fraction=0.5),
        check_tables=suite_checker(workdir / "docs", now=NOW),
    )
    quarantined = pd.read_parquet(workdir / "quarantine" / "raw_events")
    assert sorted(quarantined[REASON]) == ["duplicate_event", "future_timestamp", "null_user_id"]
    behaviour = good[good[EVENT_TYPE] != EVENT_IMPRESSION]
    assert result.manifest["counts"]["snapshot_rows"] == len(behaviour)  # every valid row kept
    assert "zz" not in Vocabulary.load(result.layout.vocab).ids
    assert list((workdir / "docs").rglob("*.html"))  # GX Data Docs written
    assert result.manifest["seconds"]["table_suites"] > 0


@pytest.mark.parametrize(
    "mib,cores,expected", [(0, 2, 2), (14, 2, 2), (140, 2, 6), (1400, 2, 44), (100, 16, 16)]
)
def test_shuffle_partitions_follow_the_input_size(mib: int, cores: int, expected: int) -> None:
    assert shuffle_partitions_for(mib * 2**20, cores) == expected
