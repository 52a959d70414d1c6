"""Column mapping of tables: aliases, --columns, warnings; unix seconds, ms, far future."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mirec.data.columns import parse_columns, resolve_columns
from mirec.data.events import parse_times
from mirec.data.loaders import load_dataset, load_table, read_raw_dataset
from mirec.errors import ConfigError, DataFormatError
from mirec.schema import EVENT_TS, ITEM_ID, REASON, SOURCE_LINE, USER_ID

TIMESTAMP_CSV = (
    "user_id,item_id,timestamp,event_type\n"
    "u1,i1,1600000000,interaction\n"
    "u1,i2,not a time,interaction\n"
    "u1,i1,1600000000,interaction\n"
    "u2,i3,100000000000,click\n"
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_timestamp_header_is_read_as_event_ts(tmp_path: Path) -> None:
    ds = load_table(_write(tmp_path / "ev.csv", TIMESTAMP_CSV), max_bad_fraction=1.0)
    assert ds.events[EVENT_TS].tolist() == [pd.Timestamp(1_600_000_000, unit="s", tz="UTC")]
    bad = ds.report.bad_rows
    assert bad[[SOURCE_LINE, REASON]].values.tolist() == [
        [3, "bad_timestamp"],
        [4, "duplicate_event"],
        [5, "future_timestamp"],  # year 5138 in unix seconds is future, not unparsable
    ]


def test_aliases_and_explicit_mapping(tmp_path: Path) -> None:
    csv = _write(tmp_path / "a.csv", "uid,item,ts,rating\n1,10,1600000000,5\n2,11,1600000001,3\n")
    assert resolve_columns(["uid", "item", "ts", "rating"], None, "a.csv") == {
        USER_ID: "uid",
        ITEM_ID: "item",
        EVENT_TS: "ts",
    }
    assert load_table(csv).events[USER_ID].tolist() == ["1", "2"]
    csv = _write(tmp_path / "b.csv", "who,what,when\n1,10,2020-01-01\n")
    with pytest.raises(DataFormatError, match="no user_id column"):
        load_table(csv)
    ds = load_dataset(csv, columns=parse_columns("user_id=who,item_id=what,event_ts=when"))
    assert ds.events[EVENT_TS].tolist() == [pd.Timestamp("2020-01-01", tz="UTC")]
    with pytest.raises(DataFormatError, match="no column 'nope'"):
        load_dataset(csv, columns={USER_ID: "nope"})


def test_unused_column_and_missing_time_warn(tmp_path: Path, caplog) -> None:
    csv = _write(tmp_path / "c.csv", "user_id,item_id,rating,price\n1,10,5,9.99\n")
    with caplog.at_level(logging.WARNING, logger="mirec.data.columns"):
        read_raw_dataset(csv)
    messages = [r.getMessage() for r in caplog.records]
    assert any("['price'] are not read" in m for m in messages)  # rating is ignored by rule
    assert not any("rating" in m for m in messages)
    assert sum("NO TIME COLUMN" in m for m in messages) == 1


def test_parse_columns_errors() -> None:
    assert parse_columns("event_ts=timestamp, user_id=uid") == {
        EVENT_TS: "timestamp",
        USER_ID: "uid",
    }
    assert parse_columns(None) == {}
    for bad in ("event_ts", "customer=uid", "user_id=a,user_id=b", "=x"):
        with pytest.raises(ConfigError):
            parse_columns(bad)
    with pytest.raises(ConfigError, match="tables"):
        load_dataset("demo", columns={USER_ID: "x"})


def test_unix_seconds_milliseconds_iso_and_far_future() -> None:
    seconds = parse_times(pd.Series(["1600000000", "1600000001"]))[1]
    millis_ts, millis = parse_times(pd.Series([1_600_000_000_000, 1_600_000_001_000, 1e11]))
    assert np.allclose(seconds, [1.6e9, 1.6e9 + 1])
    assert np.allclose(millis, [1.6e9, 1.6e9 + 1, 1e8])  # a milliseconds column
    assert millis_ts[0] == pd.Timestamp(1_600_000_000, unit="s", tz="UTC")
    ts, secs = parse_times(pd.Series(["1600000000", "100000000000", "3000-01-01", "junk", None]))
    assert ts.isna().tolist() == [False, True, True, True, True]
    assert secs[1] == 1e11 and secs[2] > 3e10  # far future stays a number: future, not bad
    assert np.isnan(secs[3:]).all()
