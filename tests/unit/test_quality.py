"""Row rules: every reason, their priority, duplicate handling and the bad-fraction check."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from mirec.data.events import LoadReport, make_events
from mirec.data.quality import (
    REASONS,
    check_bad_fraction,
    count_reasons,
    find_bad_rows,
    split_bad_rows,
)
from mirec.errors import DataValidationError
from mirec.schema import EVENT_TYPE, ITEM_ID, REASON, SOURCE_LINE

NOW = datetime(2025, 1, 1, tzinfo=UTC)
EPOCH = datetime(1990, 1, 1, tzinfo=UTC)
T0 = 1_600_000_000  # 2020-09-13


def _reasons(ev: pd.DataFrame) -> list[str | None]:
    return find_bad_rows(ev, now=NOW, epoch=EPOCH).tolist()


def test_each_reason_is_found() -> None:
    ev = make_events(
        ["u", None, "", "u", "u", "u", "u", "u", "u", "u\ufffd", "u"],
        ["i", "i", "i", None, "i", "i", "i", "i", "i", "i", "i\ud800"],
        [T0, T0, T0, T0, "not a time", 1_900_000_000, 100, T0 + 1, T0, T0 + 2, T0 + 3],
        event_type=["interaction"] * 7 + ["purchase", "interaction", "click", "click"],
    )
    assert _reasons(ev) == [
        None,
        "null_user_id",
        "null_user_id",
        "null_item_id",
        "bad_timestamp",
        "future_timestamp",
        "before_epoch",
        "unknown_event_type",
        "duplicate_event",  # same (user, item, ts, type) as row 0
        "invalid_utf8_id",
        "invalid_utf8_id",
    ]


def test_first_matching_reason_wins() -> None:
    ev = make_events([None], [None], ["garbage"], event_type="nope")
    assert _reasons(ev) == ["null_user_id"]
    ev = make_events(["u"], ["i"], [1_900_000_000], event_type="nope")
    assert _reasons(ev) == ["future_timestamp"]


def test_duplicates_keep_the_first_copy_in_seq_pos_order() -> None:
    ev = make_events(["u", "u", "u"], ["i", "i", "i"], [T0] * 3, seq_pos=[7, 3, 5])
    assert _reasons(ev) == ["duplicate_event", None, "duplicate_event"]


def test_event_id_is_the_duplicate_key_when_present() -> None:
    # same event id with different content -> duplicate; same content with distinct ids -> kept
    ev = make_events(
        ["u", "u", "v", "v"],
        ["i", "j", "k", "k"],
        [T0, T0 + 1, T0, T0],
        event_id=["e1", "e1", "e2", "e3"],
    )
    assert _reasons(ev) == [None, "duplicate_event", None, None]
    # rows without an id fall back to the content key
    ev = make_events(["u", "u"], ["i", "i"], [T0, T0], event_id=[None, None])
    assert _reasons(ev) == [None, "duplicate_event"]


def test_missing_event_type_column_is_fine_and_empty_frame_works() -> None:
    ev = make_events(["u"], ["i"], [T0]).drop(columns=[EVENT_TYPE])
    assert _reasons(ev) == [None]
    assert _reasons(make_events([], [], [])) == []


def test_custom_event_types() -> None:
    ev = make_events(["u"], ["i"], [T0], event_type="purchase")
    assert find_bad_rows(ev, now=NOW, epoch=EPOCH, known_event_types=["purchase"]).tolist() == [
        None
    ]


def test_split_bad_rows_adds_reason_and_line() -> None:
    ev = make_events(["u", None, "u"], ["i", "i", "j"], [T0, T0, T0])
    reasons = find_bad_rows(ev, now=NOW, epoch=EPOCH)
    clean, bad = split_bad_rows(ev, reasons, source_lines=[10, 11, 12])
    assert clean[ITEM_ID].tolist() == ["i", "j"]
    assert bad[REASON].tolist() == ["null_user_id"] and bad[SOURCE_LINE].tolist() == [11]
    assert count_reasons(bad) == {"null_user_id": 1}


def _report(read: int, bad: dict[str, int]) -> LoadReport:
    rows = pd.DataFrame(
        {
            REASON: [r for r, n in bad.items() for _ in range(n)],
            SOURCE_LINE: range(2, 2 + sum(bad.values())),
        }
    )
    return LoadReport("events.csv", read, read - sum(bad.values()), bad, rows)


def test_check_bad_fraction_raises_with_a_readable_summary() -> None:
    report = _report(100, {"null_user_id": 2, "future_timestamp": 1})
    check_bad_fraction(report, 0.03)  # exactly at the threshold passes
    with pytest.raises(DataValidationError) as err:
        check_bad_fraction(report, 0.01)
    message = str(err.value)
    for part in ("events.csv", "3 of 100", "null_user_id=2", "future_timestamp=1", "lines: 2"):
        assert part in message
    check_bad_fraction(_report(0, {}), 0.0)  # empty source is not an error


def test_reason_names_are_the_contract() -> None:
    assert REASONS == (
        "malformed_line",
        "null_user_id",
        "null_item_id",
        "future_timestamp",
        "before_epoch",
        "bad_timestamp",
        "unknown_event_type",
        "duplicate_event",
        "invalid_utf8_id",
    )


def test_both_engines_interpret_every_check_of_the_one_rule_table() -> None:
    from mirec.data.quality import PANDAS_CHECKS
    from mirec.data.rules import RULES, Check
    from mirec.validation.rules_spark import SPARK_CHECKS

    assert set(PANDAS_CHECKS) == set(SPARK_CHECKS) == set(Check)
    assert {rule.check for rule in RULES} == set(Check)
    assert REASONS[1:] == tuple(rule.reason for rule in RULES)


def test_far_future_unix_time_is_future_not_bad() -> None:
    ev = pd.DataFrame(
        {
            "user_id": ["u"] * 5,
            "item_id": ["i", "j", "k", "l", "m"],
            # 2020 x3, year 5138, year -1199 (a seconds column: most values are below 1e11)
            "event_ts": [T0, T0 + 1, T0 + 2, 100_000_000_000, -100_000_000_000],
        }
    )
    assert _reasons(ev) == [None, None, None, "future_timestamp", "before_epoch"]
    # a column that is mostly milliseconds reads 1e11 as 1973 and T0 as 1970: before the epoch
    ev["event_ts"] = [T0 * 1000, T0 * 1000 + 1, T0 * 1000 + 2, 100_000_000_000, T0]
    assert _reasons(ev) == [None, None, None, "before_epoch", "before_epoch"]
