"""Pandas quarantine of the bad-input corpus: per-row reasons, files, threshold, odd encodings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mirec.data.quality import INVALID_UTF8_ID, REASONS
from mirec.errors import ConfigError, DataValidationError
from mirec.schema import EVENT_TS, ITEM_ID, MIN_EVENT_TS, REASON, SEQ_POS, USER_ID
from mirec.validation.corpus import CORPUS_NOW, HEAVY_USER, bad_event_corpus
from mirec.validation.quarantine import (
    QuarantineReport,
    quarantine_events_pandas,
    read_events_lenient,
)


@pytest.fixture(scope="module")
def corpus() -> tuple[pd.DataFrame, pd.Series]:
    return bad_event_corpus()


def _run(events: pd.DataFrame, out: Path, max_bad: float = 0.01, **kwargs: object):
    return quarantine_events_pandas(
        events, now=CORPUS_NOW, epoch=MIN_EVENT_TS, out_dir=out, max_bad_fraction=max_bad, **kwargs
    )


def test_corpus_rows_get_their_expected_reason(corpus, tmp_path: Path) -> None:
    events, expected = corpus
    clean, report = _run(events, tmp_path)
    bad = pd.read_parquet(report.quarantine_path)
    got = pd.Series([None] * len(events), dtype=object)
    got[bad[SEQ_POS].to_numpy()] = bad[REASON].to_numpy()
    mismatches = [
        (pos, g, e) for pos, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e
    ]
    assert mismatches == []
    # every valid row survives, unchanged apart from the parsed timestamp
    valid = expected.isna().to_numpy()
    assert clean[SEQ_POS].tolist() == events.loc[valid, SEQ_POS].tolist()
    assert clean[USER_ID].tolist() == events.loc[valid, USER_ID].tolist()
    assert str(clean[EVENT_TS].dtype) == "datetime64[ns, UTC]"
    assert clean[EVENT_TS].notna().all()


def test_corpus_report_counts_and_files(corpus, tmp_path: Path) -> None:
    events, expected = corpus
    _, report = _run(events, tmp_path)
    want = expected.value_counts().to_dict()
    assert report.bad_by_reason == {r: want[r] for r in REASONS if r in want}
    assert list(report.bad_by_reason) == [r for r in REASONS if r in want]  # priority order
    assert report.rows_in == len(events)
    assert report.rows_clean == int(expected.isna().sum())
    assert report.bad_fraction == pytest.approx(expected.notna().mean())
    assert report.long_history_users == 1  # the 10^5-event user: valid, kept, counted
    assert report.max_user_events == 100_000
    assert report.quarantine_path == str(tmp_path / "quarantine" / "raw_events")
    saved = json.loads((tmp_path / "quarantine" / "raw_events.report.json").read_text())
    assert saved["bad_by_reason"] == report.bad_by_reason
    assert saved["rows_bad"] == report.rows_bad


def test_threshold_raises_with_summary_after_writing(corpus, tmp_path: Path) -> None:
    events, expected = corpus
    small = events[(events[USER_ID] != HEAVY_USER).to_numpy()]
    with pytest.raises(DataValidationError) as caught:
        _run(small, tmp_path, max_bad=0.05, stage="ingest")
    message = str(caught.value)
    assert "quarantine 'ingest' FAILED" in message
    for reason in expected.dropna().unique():
        assert reason in message
    assert str(tmp_path / "quarantine" / "ingest") in message
    bad = pd.read_parquet(tmp_path / "quarantine" / "ingest")
    assert len(bad) == int(expected.notna().sum())
    assert (tmp_path / "quarantine" / "ingest.report.json").exists()


def test_clean_input_writes_no_quarantine_and_clears_a_stale_one(corpus, tmp_path: Path) -> None:
    events, expected = corpus
    stale = tmp_path / "quarantine" / "raw_events"
    stale.mkdir(parents=True)
    (stale / "part-old.parquet").write_bytes(b"old")
    clean_input = events[expected.isna().to_numpy()].head(50)
    clean, report = _run(clean_input, tmp_path, max_bad=0.0)
    assert report.quarantine_path is None and report.bad_by_reason == {}
    assert report.bad_fraction == 0.0 and len(clean) == 50
    assert not stale.exists()
    assert "quarantined rows: none" in report.summary()


def test_empty_input(tmp_path: Path) -> None:
    events, _ = bad_event_corpus(0)
    clean, report = _run(events.iloc[:0], tmp_path, max_bad=0.0)
    assert clean.empty and report.rows_in == 0 and report.bad_fraction == 0.0


def test_bytes_and_lone_surrogate_ids_are_flagged_and_stored(tmp_path: Path) -> None:
    events, _ = bad_event_corpus(0)
    events = events.head(3).copy()  # three valid rows
    events[USER_ID] = events[USER_ID].astype(object)
    events.loc[0, USER_ID] = b"caf\xe9"  # latin-1 bytes: not UTF-8
    events.loc[1, ITEM_ID] = "x\udcff"  # a lone surrogate (surrogateescape leftovers)
    clean, report = _run(events, tmp_path, max_bad=1.0)
    assert report.bad_by_reason == {INVALID_UTF8_ID: 2}
    bad = pd.read_parquet(report.quarantine_path).sort_values(SEQ_POS)
    assert bad[USER_ID].iloc[0] == "caf\ufffd"
    assert bad[ITEM_ID].iloc[1] == "x\\udcff"  # escaped, since parquet holds only UTF-8
    assert len(clean) == 1


def test_read_events_lenient_decodes_invalid_utf8(tmp_path: Path) -> None:
    raw = b"u1caf\xe9"
    offsets = np.array([0, 2, 6], dtype=np.int32)
    users = pa.Array.from_buffers(
        pa.string(), 2, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(raw)]
    )
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({USER_ID: users, ITEM_ID: ["i1", "i2"]}), str(path))
    frame = read_events_lenient(path)
    assert frame[USER_ID].tolist() == ["u1", "caf\ufffd"]
    assert frame[ITEM_ID].tolist() == ["i1", "i2"]


def test_stage_must_be_a_plain_name(corpus, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stage"):
        _run(corpus[0].head(3), tmp_path, stage="../escape")


def test_summary_is_a_readable_table() -> None:
    report = QuarantineReport("raw_events", 1000, 990, {"null_user_id": 10}, "q/raw", 0.01, 0.05)
    text = report.summary()
    assert text.splitlines()[0].startswith("quarantine 'raw_events' ok: 10 of 1,000 rows")
    assert "| null_user_id" in text and "1.0000%" in text and "q/raw" in text


def test_importing_the_package_stays_cheap() -> None:
    code = (
        "import sys, mirec.validation\n"
        "print(','.join(m for m in ('great_expectations', 'pyspark') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
