"""Spark quarantine gives the pandas reasons row for row; GX suites on Spark frames (arrays too)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mirec.data.events import make_events, read_events_parquet, write_events_parquet
from mirec.errors import DataValidationError
from mirec.schema import (
    EVENT_TS,
    FEAST_TS,
    HIST_ITEM_IDS,
    HIST_LEN,
    ITEM_ID,
    MIN_EVENT_TS,
    REASON,
    SEQ_POS,
    USER_ID,
)
from mirec.validation import (
    SuiteParams,
    quarantine_events_pandas,
    quarantine_events_spark,
    require,
    validate_table,
)
from mirec.validation.corpus import CORPUS_NOW, HEAVY_USER, bad_event_corpus

pytestmark = [pytest.mark.integration, pytest.mark.spark]


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """One local[2] session for this module (UTC, loopback, 4 shuffle partitions)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    try:
        from mirec.features.spark_session import get_spark

        session = get_spark("local[2]", conf={"spark.sql.shuffle.partitions": "4"})
    except ImportError:  # the features package is not there: an equivalent local session
        from pyspark.sql import SparkSession

        session = (
            SparkSession.builder.master("local[2]")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "4")
            .getOrCreate()
        )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def corpus() -> tuple[pd.DataFrame, pd.Series]:
    return bad_event_corpus()


def _reasons_by_pos(path: str | None) -> dict[int, str]:
    if path is None:
        return {}
    bad = pd.read_parquet(path)
    return dict(zip(bad[SEQ_POS].tolist(), bad[REASON].tolist(), strict=True))


def _both(events: pd.DataFrame, spark, out: Path, **kwargs):
    args = {"now": CORPUS_NOW, "epoch": MIN_EVENT_TS, "max_bad_fraction": 1.0, **kwargs}
    clean_pd, report_pd = quarantine_events_pandas(events, out_dir=out / "pandas", **args)
    clean_sp, report_sp = quarantine_events_spark(
        spark.createDataFrame(events), out_dir=out / "spark", **args
    )
    return clean_pd, report_pd, clean_sp, report_sp


def test_corpus_gets_identical_reasons_in_pandas_and_spark(spark, corpus, tmp_path: Path) -> None:
    events, expected = corpus
    clean_pd, report_pd, clean_sp, report_sp = _both(events, spark, tmp_path)
    want = {pos: r for pos, r in zip(events[SEQ_POS], expected, strict=True) if r is not None}
    assert _reasons_by_pos(report_sp.quarantine_path) == want
    assert _reasons_by_pos(report_pd.quarantine_path) == want
    for field in ("rows_in", "rows_clean", "bad_by_reason", "bad_fraction"):
        assert getattr(report_sp, field) == getattr(report_pd, field), field
    assert report_sp.long_history_users == report_pd.long_history_users == 1
    assert report_sp.max_user_events == 100_000
    # every valid row survives with the same parsed timestamp
    spark_rows = clean_sp.toPandas().sort_values(SEQ_POS).reset_index(drop=True)
    assert spark_rows[SEQ_POS].tolist() == clean_pd[SEQ_POS].tolist()
    assert spark_rows[USER_ID].tolist() == clean_pd[USER_ID].tolist()
    spark_ts = pd.to_datetime(spark_rows[EVENT_TS]).dt.tz_localize("UTC")
    assert (spark_ts == clean_pd[EVENT_TS]).all()
    assert (spark_rows[USER_ID] == HEAVY_USER).sum() == 100_000
    # raw values of the bad rows are kept for inspection
    bad = pd.read_parquet(report_sp.quarantine_path)
    assert "not a time" in bad[EVENT_TS].tolist()


def test_typed_parquet_input_matches_pandas(spark, tmp_path: Path) -> None:
    """Timestamp-typed parquet (what the loaders write): duplicates, future and old rows."""
    ts = pd.to_datetime(
        ["2020-01-01", "2020-01-01", "2020-01-02", "2099-01-01", "1985-01-01", "2020-01-01"],
        utc=True,
    )
    events = make_events(
        ["a", "a", "a", "b", "b", "c"],
        ["1", "1", "2", "3", "4", "1"],
        ts,
        seq_pos=[5, 0, 1, 2, 3, 4],  # the copy with the larger seq_pos is the duplicate
        event_id=[None, None, "x", "y", "z", "x"],
    )
    path = tmp_path / "events.parquet"
    write_events_parquet(events, path)
    _, report_pd = quarantine_events_pandas(
        read_events_parquet(path),
        now=CORPUS_NOW,
        epoch=MIN_EVENT_TS,
        out_dir=tmp_path / "pd",
        max_bad_fraction=1.0,
    )
    _, report_sp = quarantine_events_spark(
        spark.read.parquet(str(path)),
        now=CORPUS_NOW,
        epoch=MIN_EVENT_TS,
        out_dir=tmp_path / "sp",
        max_bad_fraction=1.0,
    )
    want = {5: "duplicate_event", 2: "future_timestamp", 3: "before_epoch", 4: "duplicate_event"}
    assert _reasons_by_pos(report_pd.quarantine_path) == want
    assert _reasons_by_pos(report_sp.quarantine_path) == want


def test_invalid_utf8_bytes_in_parquet_are_flagged(spark, tmp_path: Path) -> None:
    raw = b"u1caf\xe9"
    offsets = np.array([0, 2, 6], dtype=np.int32)
    users = pa.Array.from_buffers(
        pa.string(), 2, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(raw)]
    )
    table = pa.table(
        {
            USER_ID: users,
            ITEM_ID: ["i1", "i2"],
            EVENT_TS: pa.array([1_600_000_000_000_000] * 2, pa.timestamp("us", tz="UTC")),
            SEQ_POS: [0, 1],
        }
    )
    path = tmp_path / "raw.parquet"
    pq.write_table(table, str(path))
    clean, report = quarantine_events_spark(
        spark.read.parquet(str(path)),
        now=CORPUS_NOW,
        epoch=MIN_EVENT_TS,
        out_dir=tmp_path,
        max_bad_fraction=1.0,
    )
    assert report.bad_by_reason == {"invalid_utf8_id": 1}
    assert [r[USER_ID] for r in clean.collect()] == ["u1"]


def test_threshold_raises_after_writing_the_quarantine(spark, corpus, tmp_path: Path) -> None:
    events, expected = corpus
    small = events[(events[USER_ID] != HEAVY_USER).to_numpy()]
    with pytest.raises(DataValidationError) as caught:
        quarantine_events_spark(
            spark.createDataFrame(small),
            now=CORPUS_NOW,
            epoch=MIN_EVENT_TS,
            out_dir=tmp_path,
            max_bad_fraction=0.1,
        )
    stage = tmp_path / "quarantine" / "raw_events"
    assert "FAILED" in str(caught.value) and str(stage) in str(caught.value)
    assert "duplicate_event" in str(caught.value)
    assert len(pd.read_parquet(stage)) == int(expected.notna().sum())
    assert stage.with_name("raw_events.report.json").is_file()


def test_gx_suites_on_spark_frames(spark, corpus, tmp_path: Path) -> None:
    events, _ = corpus
    clean, _ = quarantine_events_spark(
        spark.createDataFrame(events.head(40)),
        now=CORPUS_NOW,
        epoch=MIN_EVENT_TS,
        out_dir=tmp_path,
        max_bad_fraction=1.0,
    )
    params = SuiteParams(now=CORPUS_NOW, vocab_size=10, max_len=3)
    outcome = validate_table(clean, "events", params=params, docs_dir=tmp_path / "docs")
    assert outcome.success, outcome.summary()
    sequences = pd.DataFrame(
        {
            USER_ID: ["a", "b", "c"],
            FEAST_TS: pd.to_datetime(["2020-01-01", "2021-01-01", "2022-01-01"], utc=True),
            HIST_ITEM_IDS: [[1, 2, 3], [], [4, 10]],
            HIST_LEN: [3, 0, 2],
        }
    )
    good = validate_table(spark.createDataFrame(sequences), "user_sequences", params=params)
    assert good.success, good.summary()
    sequences.at[2, HIST_ITEM_IDS] = [4, 11]  # beyond the vocabulary
    sequences.at[0, FEAST_TS] = pd.Timestamp("2030-01-01", tz="UTC")  # in the future
    bad = validate_table(
        spark.createDataFrame(sequences), "user_sequences", params=params, docs_dir=tmp_path / "d"
    )
    assert {r["column"] for r in bad.failures} == {f"{HIST_ITEM_IDS}__max", FEAST_TS}
    assert all(r["exception"] is None for r in bad.results)
    with pytest.raises(DataValidationError, match="Data Docs: .*spark-user_sequences.html"):
        require(bad)
