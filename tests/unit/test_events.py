"""Canonical event frame: construction, timestamp coercion, ordering and parquet round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mirec.data.events import (
    TS_DTYPE,
    event_timestamps_us,
    make_events,
    no_time_timestamps,
    read_events_parquet,
    sort_events,
    to_utc_timestamps,
    write_events_parquet,
)
from mirec.errors import DataFormatError
from mirec.schema import EVENT_ID, EVENT_TS, EVENT_TYPE, ITEM_ID, NO_TIME_BASE, SEQ_POS, USER_ID


def test_make_events_has_canonical_columns_and_types() -> None:
    ev = make_events([1, 2], ["a", "b"], [0, 86_400], event_id=["x", None])
    assert list(ev.columns) == [USER_ID, ITEM_ID, EVENT_TS, EVENT_TYPE, SEQ_POS, EVENT_ID]
    assert ev[USER_ID].tolist() == ["1", "2"]
    assert ev[EVENT_TS].dtype == TS_DTYPE
    assert ev[EVENT_TYPE].tolist() == ["interaction", "interaction"]
    assert ev[SEQ_POS].dtype == np.int64 and ev[SEQ_POS].tolist() == [0, 1]
    assert ev[EVENT_ID].tolist() == ["x", None]


def test_to_utc_timestamps_parses_seconds_iso_and_marks_garbage_nat() -> None:
    raw = pd.Series(
        [881250949, "881250949", "2020-01-01T05:00:00+02:00", "2020-01-01", "abc", None, 1e13]
    )
    ts = to_utc_timestamps(raw)
    assert ts.dtype == TS_DTYPE
    assert ts[0] == pd.Timestamp("1997-12-04 15:55:49", tz="UTC")
    assert ts[1] == ts[0]
    assert ts[2] == pd.Timestamp("2020-01-01 03:00", tz="UTC")
    assert ts[3] == pd.Timestamp("2020-01-01", tz="UTC")  # naive ISO = UTC
    assert ts[4:].isna().all()  # unparsable, null, out of the ns range


def test_naive_and_other_zone_datetimes_become_utc() -> None:
    naive = pd.Series(pd.to_datetime(["2020-01-01 00:00"]))
    paris = naive.dt.tz_localize("Europe/Paris")
    assert to_utc_timestamps(naive)[0] == pd.Timestamp("2020-01-01", tz="UTC")
    assert to_utc_timestamps(paris)[0] == pd.Timestamp("2019-12-31 23:00", tz="UTC")


def test_no_time_timestamps_are_base_plus_seq_pos_seconds() -> None:
    ts = no_time_timestamps(np.array([0, 5]))
    assert ts[0] == pd.Timestamp(NO_TIME_BASE)
    assert (ts[1] - ts[0]).total_seconds() == 5


def test_sort_events_orders_by_user_time_then_seq_pos() -> None:
    ev = make_events(["b", "a", "a", "a"], ["1", "2", "3", "4"], [5, 9, 1, 1], seq_pos=[0, 1, 3, 2])
    out = sort_events(ev)
    assert out[ITEM_ID].tolist() == ["4", "3", "2", "1"]
    assert out.index.tolist() == [0, 1, 2, 3]


def test_parquet_round_trip_is_utc_microseconds(tmp_path: Path) -> None:
    ev = make_events(["u1", "u2"], ["i1", "i2"], ["2024-01-01T00:00:00.123456789", 10])
    path = tmp_path / "events" / "e.parquet"
    write_events_parquet(ev, path)
    field = pq.read_schema(path).field(EVENT_TS)
    assert field.type == pa.timestamp("us", tz="UTC")  # Spark refuses nanoseconds
    back = read_events_parquet(path)
    assert back[EVENT_TS].dtype == TS_DTYPE
    assert back[EVENT_TS][0] == pd.Timestamp("2024-01-01 00:00:00.123456", tz="UTC")
    assert back[USER_ID].tolist() == ["u1", "u2"] and back[SEQ_POS].tolist() == [0, 1]
    assert event_timestamps_us(back).tolist() == [1704067200123456, 10_000_000]


def test_read_events_parquet_refuses_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({USER_ID: ["1"]}), path)
    with pytest.raises(DataFormatError, match="missing event columns"):
        read_events_parquet(path)
    with pytest.raises(DataFormatError, match="cannot read parquet"):
        read_events_parquet(tmp_path / "absent.parquet")
