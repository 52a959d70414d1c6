"""Loaders on the real public files, on small malformed files, and the bad-row tolerance."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mirec.data.events import Dataset, make_events, write_events_parquet
from mirec.data.loaders import load_dataset, load_recbole, load_s3rec, load_table
from mirec.data.synthetic import write_synthetic_events
from mirec.errors import ConfigError, DataFormatError, DataValidationError
from mirec.schema import (
    EVENT_ID,
    EVENT_TS,
    ITEM_ATTRIBUTES,
    ITEM_ID,
    ITEM_TEXT,
    NO_TIME_BASE,
    REASON,
    SEQ_POS,
    SOURCE_LINE,
    USER_ATTRIBUTES,
    USER_ID,
)


# --- real data ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def beauty(shared_data: Path) -> tuple[Dataset, float]:
    start = time.perf_counter()
    ds = load_dataset(str(shared_data / "Beauty"))
    return ds, time.perf_counter() - start


def test_beauty_matches_published_counts_and_loads_fast(beauty: tuple[Dataset, float]) -> None:
    ds, seconds = beauty
    ev = ds.events
    assert (len(ev), ev[USER_ID].nunique(), ev[ITEM_ID].nunique()) == (198_502, 22_363, 12_101)
    assert ds.report.rows_read == ds.report.rows_kept == 198_502 and ds.report.bad_by_reason == {}
    assert seconds < 5.0, f"Beauty took {seconds:.2f} s to load"
    assert ev[SEQ_POS].tolist() == list(range(len(ev)))
    first = ev[ev[USER_ID] == "1"]
    assert first[ITEM_ID].tolist() == ["1", "2", "3", "4", "5"]  # line "1 1 2 3 4 5"
    assert first[EVENT_TS].iloc[0] == pd.Timestamp(1318896000, unit="s", tz="UTC")
    assert ev[EVENT_TS].min().year == 2002 and ev[EVENT_TS].max().year == 2014
    assert len(ds.items) == 12_101 and len(ds.users) == 22_363
    attrs = ds.items.set_index(ITEM_ID)[ITEM_ATTRIBUTES]
    assert attrs["4"] == ["a1", "a2", "a3"]  # {"4": [1, 2, 3], ...}
    assert np.mean([len(a) for a in attrs]) == pytest.approx(3.72, abs=0.01)


def test_yelp_without_time_file_uses_base_date_plus_position(shared_data: Path) -> None:
    ds = load_s3rec(shared_data / "Yelp")
    ev = ds.events
    assert (len(ev), ev[USER_ID].nunique(), ev[ITEM_ID].nunique()) == (316_354, 30_431, 20_033)
    expected = pd.Timestamp(NO_TIME_BASE) + pd.to_timedelta(ev[SEQ_POS], unit="s")
    assert (ev[EVENT_TS] == expected).all()
    assert ds.name == "Yelp"


def test_ml100k_events_profiles_and_catalog(shared_data: Path) -> None:
    ds = load_dataset(str(shared_data / "ml-100k"))
    ev = ds.events
    assert (len(ev), ev[USER_ID].nunique(), ev[ITEM_ID].nunique()) == (100_000, 943, 1_682)
    assert ev.iloc[0][[USER_ID, ITEM_ID]].tolist() == ["196", "242"]  # first data row
    assert ev.iloc[0][EVENT_TS] == pd.Timestamp(881250949, unit="s", tz="UTC")
    users = ds.users.set_index(USER_ID)[USER_ATTRIBUTES]
    assert users["1"] == ["age=24", "gender=M", "occupation=technician", "zip_code=85711"]
    items = ds.items.set_index(ITEM_ID)
    assert items.loc["1", ITEM_ATTRIBUTES] == [
        "release_year=1995",
        "class=Animation",
        "class=Children's",
        "class=Comedy",
    ]
    assert items.loc["1", ITEM_TEXT] == "Toy Story"
    # users rated in batches: many same-timestamp events, ordered by file row (SEQ_POS)
    ties = ev.duplicated([USER_ID, EVENT_TS]).sum()
    assert ties == 50_561


# --- S3-Rec format errors and bad rows ------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_s3rec_non_integer_token_names_file_and_line(tmp_path: Path) -> None:
    seq = _write(tmp_path / "Toy" / "Toy.txt", "1 1 2 3\n2 4 x5 6\n")
    with pytest.raises(DataFormatError) as err:
        load_s3rec(seq)
    assert (err.value.path, err.value.line) == (str(seq), 2)
    assert "'x5' is not an integer" in str(err.value)


def test_s3rec_misaligned_time_file_names_line(tmp_path: Path) -> None:
    _write(tmp_path / "Toy" / "Toy.txt", "1 1 2 3\n2 4 5\n")
    times = _write(
        tmp_path / "Toy" / "Toy_time.txt", "1 1300000000 1300000000 1300086400\n2 1300000000\n"
    )
    with pytest.raises(DataFormatError) as err:
        load_s3rec(tmp_path / "Toy")
    assert (err.value.path, err.value.line) == (str(times), 2)
    assert "does not line up" in str(err.value)
    _write(times, "1 1300000000 1300000000 1300086400\n")
    with pytest.raises(DataFormatError, match="1 users but Toy.txt has 2"):
        load_s3rec(tmp_path / "Toy")


def test_s3rec_broken_json_names_line(tmp_path: Path) -> None:
    _write(tmp_path / "Toy" / "Toy.txt", "1 1 2 3\n")
    attrs = _write(tmp_path / "Toy" / "Toy_item2attributes.json", '{"1": [1, 2],\n "2": [3,\n')
    with pytest.raises(DataFormatError) as err:
        load_s3rec(tmp_path / "Toy")
    assert err.value.path == str(attrs) and err.value.line is not None
    _write(attrs, '{"1": ["brand"]}')
    with pytest.raises(DataFormatError, match="list of integer"):
        load_s3rec(tmp_path / "Toy")


def test_s3rec_bad_rows_are_counted_and_the_threshold_applies(tmp_path: Path) -> None:
    _write(tmp_path / "Toy" / "Toy.txt", "1 1 2 3 4\n2 5 6 7 8\n")
    _write(
        tmp_path / "Toy" / "Toy_time.txt",
        "1 1300000000 1300000000 4000000000 5\n2 1300000000 1300000001 1300000002 1300000003\n",
    )
    with pytest.raises(DataValidationError, match="future_timestamp=1, before_epoch=1"):
        load_s3rec(tmp_path / "Toy")
    ds = load_s3rec(tmp_path / "Toy", max_bad_fraction=0.25)
    assert ds.report.bad_by_reason == {"future_timestamp": 1, "before_epoch": 1}
    assert ds.report.bad_rows[SOURCE_LINE].tolist() == [1, 1]
    assert ds.report.bad_rows[ITEM_ID].tolist() == ["3", "4"]
    assert (ds.report.rows_read, ds.report.rows_kept, len(ds.events)) == (8, 6, 6)


def test_s3rec_empty_and_one_item_lines(tmp_path: Path) -> None:
    ds = load_s3rec(_write(tmp_path / "Toy.txt", "1 7\n\n2\n"))
    assert ds.events[ITEM_ID].tolist() == ["7"] and ds.events[USER_ID].tolist() == ["1"]
    empty = load_s3rec(_write(tmp_path / "Empty.txt", ""))
    assert empty.events.empty and empty.report.rows_read == 0


# --- RecBole format errors and bad rows -----------------------------------------------------------
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def test_recbole_missing_header_names_line_1(tmp_path: Path) -> None:
    inter = _write(tmp_path / "toy.inter", "1\t2\t3\t881250949\n")
    with pytest.raises(DataFormatError) as err:
        load_recbole(inter)
    assert (err.value.path, err.value.line) == (str(inter), 1)
    assert "missing header" in str(err.value)
    _write(inter, "person:token\titem_id:token\n1\t2\n")
    with pytest.raises(DataFormatError, match="no user_id column"):
        load_recbole(inter)


def test_recbole_wrong_field_count_is_a_rejected_line(tmp_path: Path) -> None:
    inter = _write(tmp_path / "toy.inter", INTER_HEADER + "1\t2\t3\t881250949\n1\t3\t881250949\n")
    with pytest.raises(DataValidationError, match="malformed_line=1; first bad lines: 3"):
        load_recbole(tmp_path / "toy")  # path prefix
    ds = load_recbole(inter, max_bad_fraction=0.5)
    assert (ds.report.rows_read, ds.report.rows_kept) == (2, 1)
    assert ds.report.bad_rows[[REASON, SOURCE_LINE]].values.tolist() == [["malformed_line", 3]]


def test_recbole_bad_rows_and_same_timestamp_order(tmp_path: Path) -> None:
    rows = [
        "1\t10\t3\t881250949",
        "1\t11\t3\t881250949",
        "\t12\t3\t881250949",
        "2\t10\t3\tsoon",
        "2\t13\t3\t881250950",
    ] * 1
    _write(tmp_path / "toy.inter", INTER_HEADER + "\n".join(rows) + "\n")
    ds = load_recbole(tmp_path, max_bad_fraction=0.5)
    assert ds.report.bad_by_reason == {"null_user_id": 1, "bad_timestamp": 1}
    assert ds.report.bad_rows[SOURCE_LINE].tolist() == [4, 5]
    assert ds.report.bad_rows[REASON].tolist() == ["null_user_id", "bad_timestamp"]
    assert ds.events[SEQ_POS].tolist() == [0, 1, 4]  # row numbers in the .inter file
    assert ds.users[USER_ATTRIBUTES].tolist() == [[], []]


# --- generic tables -------------------------------------------------------------------------------
def test_load_table_csv_with_mapping_and_iso_times(tmp_path: Path) -> None:
    csv = _write(
        tmp_path / "clicks.csv",
        "uid,sku,when,kind\n"
        "a,x,2024-01-02T03:04:05Z,click\nb,y,1704164645,interaction\nc,,2024-01-01,click\n",
    )
    mapping = {USER_ID: "uid", ITEM_ID: "sku", EVENT_TS: "when", "event_type": "kind"}
    ds = load_table(csv, mapping, max_bad_fraction=0.5)
    assert ds.events[USER_ID].tolist() == ["a", "b"]
    assert ds.events[EVENT_TS].tolist() == [pd.Timestamp("2024-01-02 03:04:05", tz="UTC")] * 2
    assert ds.events["event_type"].tolist() == ["click", "interaction"]
    assert ds.report.bad_rows[SOURCE_LINE].tolist() == [4]  # header is line 1
    with pytest.raises(DataFormatError, match="no item_id column"):
        load_table(csv)  # uid is an alias of user_id; sku is nothing known
    with pytest.raises(ConfigError, match="unknown canonical"):
        load_table(csv, {"customer": "uid"})


def test_load_table_malformed_csv_lines_are_rejected_with_their_line(tmp_path: Path) -> None:
    csv = _write(tmp_path / "bad.csv", "user_id,item_id\n1,2\n3,4,5,6\n7\n\n8,9\n")
    ds = load_table(csv, max_bad_fraction=0.5)
    assert ds.events[USER_ID].tolist() == ["1", "8"]
    bad = ds.report.bad_rows
    assert bad[[REASON, SOURCE_LINE]].values.tolist() == [
        ["malformed_line", 3],
        ["malformed_line", 4],
    ]
    assert bad[USER_ID].tolist() == ["3", "7"] and bad[ITEM_ID].tolist() == ["4", None]
    assert ds.report.rows_read == ds.report.rows_kept + len(bad) == 4
    with pytest.raises(DataValidationError, match="malformed_line=2"):
        load_table(csv)


def test_load_table_parquet_keeps_seq_pos_and_event_ids(tmp_path: Path) -> None:
    ev = make_events(
        ["1", "1", "2"],
        ["a", "a", "b"],
        [1.7e9, 1.7e9 + 1, 1.7e9],
        seq_pos=[10, 11, 12],
        event_id=["e1", "e1", "e2"],
    )
    write_events_parquet(ev, tmp_path / "ev.parquet")
    ds = load_dataset(str(tmp_path / "ev.parquet"), max_bad_fraction=0.5)
    assert ds.events[SEQ_POS].tolist() == [10, 12]
    assert ds.events[EVENT_ID].tolist() == ["e1", "e2"]
    assert ds.report.bad_by_reason == {"duplicate_event": 1}


# --- dispatch -------------------------------------------------------------------------------------
def test_load_dataset_dispatch(tmp_path: Path) -> None:
    assert load_dataset("demo").name == "synthetic"
    _write(tmp_path / "Toy" / "Toy.txt", "1 1 2\n")
    assert load_dataset(str(tmp_path / "Toy")).name == "Toy"
    _write(tmp_path / "rb" / "m.inter", INTER_HEADER + "1\t2\t3\t881250949\n")
    assert load_dataset(str(tmp_path / "rb")).name == "m"
    assert load_dataset(str(tmp_path / "rb" / "m")).name == "m"
    parts = write_synthetic_events(tmp_path / "big", 1_000, seed=0, chunk_rows=400)
    assert len(load_dataset(str(parts)).events) == 1_000
    with pytest.raises(DataFormatError, match="no such file"):
        load_dataset(str(tmp_path / "absent"))
    with pytest.raises(DataFormatError, match="cannot tell the format"):
        load_dataset(str(_write(tmp_path / "x.json", "{}")))


def test_a_mirec_dataset_directory_loads_as_its_events_and_side_tables(tmp_path: Path) -> None:
    from mirec.data.synthetic import generate
    from mirec.pipeline.io import write_dataset_dir

    data = generate(num_users=40, num_items=30, num_clusters=3, mean_len=6, seed=1)
    root = write_dataset_dir(data.events, data.items, data.users, tmp_path / "dataset")
    loaded = load_dataset(root, max_bad_fraction=0.0)  # the side tables are not read as events
    assert loaded.report.rows_read == loaded.report.rows_kept == len(data.events)
    pairs = zip(data.items["item_id"], data.items["attributes"], strict=True)
    want = {str(k): list(v) for k, v in pairs}
    pairs = zip(loaded.items["item_id"], loaded.items["attributes"], strict=True)
    got = {str(k): list(v) for k, v in pairs}
    assert got == want
    assert len(loaded.users) == len(data.users)
