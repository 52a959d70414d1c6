"""One bad CSV through every entry point: same quarantine rows, reasons, lines and counts.

``mirec features build --data`` (Spark), the pipeline's validate step (pandas) and
``mirec data stats --quarantine`` (pandas) must write the same quarantine parquet and report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from mirec.cli import main
from mirec.pipeline.data import validate_events
from mirec.schema import EVENT_TS, ITEM_ID, REASON, SOURCE_LINE, USER_ID

pytestmark = [pytest.mark.integration, pytest.mark.spark]

# (line text, expected reason); line 1 is the header with a `timestamp` column (an alias).
BAD_LINES = [
    (",i1,1600000000,interaction", "null_user_id"),
    ("u2,,1600000000,interaction", "null_item_id"),
    ("u2,i3,not a time,interaction", "bad_timestamp"),
    ("u2,i4,4102444800,interaction", "future_timestamp"),  # 2100
    ("u2,i5,100000000000,interaction", "future_timestamp"),  # year 5138
    ("u1,i3,1600001000,interaction", "duplicate_event"),  # same as the first good row
    ("u3,i1,1600000000,purchase", "unknown_event_type"),
    ("u3,i2", "malformed_line"),  # short line
    ('u3,i3,1600000000,click,"x",y', "malformed_line"),  # garbled: too many fields
]
USERS, EVENTS_PER_USER = 6, 8


def _bad_csv(path: Path) -> tuple[Path, dict[int, str], int]:
    lines = ["user_id,item_id,timestamp,event_type"]
    good = [
        f"u{u},i{(u * 3 + k) % 20},{1_600_000_000 + 1000 * u + 60 * k},interaction"
        for u in range(1, USERS + 1)
        for k in range(EVENTS_PER_USER)
    ]
    lines += good[:1]
    expected: dict[int, str] = {}
    for text, reason in BAD_LINES:
        lines.append(text)
        expected[len(lines)] = reason  # 1-based line number
    lines += good[1:]
    path.write_text("\n".join(lines) + "\n")
    return path, expected, len(good) + len(BAD_LINES)


def _quarantine(root: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    base = root / "quarantine"
    bad = pd.read_parquet(base / "raw_events").sort_values(SOURCE_LINE).reset_index(drop=True)
    return bad, json.loads((base / "raw_events.report.json").read_text())


def test_same_quarantine_through_every_entry_point(tmp_path: Path, capsys) -> None:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    csv, expected, rows_read = _bad_csv(tmp_path / "events.csv")
    tolerance = "0.5"

    stats_dir = tmp_path / "stats"
    assert main(["data", "stats", "--data", str(csv), "--max-bad-fraction", tolerance,
                 "--quarantine", str(stats_dir)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    step_dir = tmp_path / "step"
    result = validate_events(
        str(csv), tmp_path / "clean", step_dir, tmp_path / "docs", max_bad_fraction=float(tolerance)
    )
    work = tmp_path / "features"
    assert main(["features", "build", "--data", str(csv), "--workdir", str(work),
                 f"data.max_bad_fraction={tolerance}"]) == 0  # fmt: skip

    outputs = {name: _quarantine(root) for name, root in
               (("stats", stats_dir), ("step", step_dir), ("spark", work))}  # fmt: skip
    for name, (bad, report) in outputs.items():
        assert dict(zip(bad[SOURCE_LINE], bad[REASON], strict=True)) == expected, name
        assert report["rows_in"] == rows_read, name
        assert report["rows_in"] == report["rows_clean"] + report["rows_bad"], name
        assert sum(report["bad_by_reason"].values()) == report["rows_bad"] == len(expected)
    reference, report = outputs["step"]
    columns = [USER_ID, ITEM_ID, EVENT_TS, REASON, SOURCE_LINE]
    for name in ("stats", "spark"):
        bad, other = outputs[name]
        pd.testing.assert_frame_equal(bad[columns].astype(str), reference[columns].astype(str))
        assert other["bad_by_reason"] == report["bad_by_reason"], name
    assert result.metrics["rows_read"] == rows_read
    assert result.metrics["rows_quarantined"] == len(expected)
    assert f"{len(expected)} of {rows_read} rows set aside" in printed
    clean = pd.read_parquet(tmp_path / "clean" / "events.parquet")
    assert clean[EVENT_TS].min() == pd.Timestamp(1_600_001_000, unit="s", tz="UTC")  # real times
