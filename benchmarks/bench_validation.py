"""Validation overhead: row quarantine + the GX events suite on synthetic events, pandas and Spark.

The events are ``mirec.data.synthetic.generate_events`` (long-tailed users, mean ~9 events,
Zipf items) with 0.1% planted bad rows (null user ids, future timestamps, re-delivered events).
``measure_overhead`` is also called by the features benchmark.

    python benchmarks/bench_validation.py --events 1000000 [--engines pandas spark]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirec.data.events import write_events_parquet
from mirec.data.synthetic import generate_events
from mirec.schema import EVENT_TS, ITEM_ID, MIN_EVENT_TS, USER_ID
from mirec.tables import format_table
from mirec.validation import (
    SuiteParams,
    quarantine_events_pandas,
    quarantine_events_spark,
    validate_table,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BAD_SHARE = 0.001
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def planted_events(num_events: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic events with ``BAD_SHARE`` bad rows: a third each null user, future, duplicate."""
    events = generate_events(num_events, seed=seed)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(events), size=max(3, int(num_events * BAD_SHARE)), replace=False)
    nulls, future, dups = np.array_split(picks, 3)
    events[USER_ID] = events[USER_ID].astype(object)
    events.loc[nulls, USER_ID] = None
    events.loc[future, EVENT_TS] = pd.Timestamp("2099-01-01", tz="UTC")
    return pd.concat([events, events.iloc[dups]], ignore_index=True)  # same seq_pos: later copy


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _pandas(events: pd.DataFrame, params: SuiteParams, work: Path) -> dict[str, float]:
    (clean, report), quarantine_s = _timed(
        quarantine_events_pandas,
        events,
        now=NOW,
        epoch=MIN_EVENT_TS,
        out_dir=work / "pandas",
        max_bad_fraction=0.01,
    )
    outcome, suite_s = _timed(validate_table, clean, "events", params=params, docs_dir=work / "d")
    assert outcome.success, outcome.summary()
    return {
        "pandas_quarantine_s": quarantine_s,
        "pandas_suite_s": suite_s,
        "pandas_total_s": quarantine_s + suite_s,
        "pandas_bad_rows": float(report.rows_bad),
    }


def _spark(path: Path, params: SuiteParams, work: Path, spark: Any) -> dict[str, float]:
    raw = spark.read.parquet(str(path))
    _, read_s = _timed(raw.count)  # the baseline: one pass over the file
    (clean, report), quarantine_s = _timed(
        quarantine_events_spark,
        raw,
        now=NOW,
        epoch=MIN_EVENT_TS,
        out_dir=work / "spark",
        max_bad_fraction=0.01,
    )
    outcome, suite_s = _timed(validate_table, clean, "events", params=params, docs_dir=work / "d")
    assert outcome.success, outcome.summary()
    return {
        "spark_read_count_s": read_s,
        "spark_quarantine_s": quarantine_s,
        "spark_suite_s": suite_s,
        "spark_total_s": quarantine_s + suite_s,
        "spark_bad_rows": float(report.rows_bad),
    }


def measure_overhead(
    num_events: int,
    *,
    engines: tuple[str, ...] = ("pandas", "spark"),
    spark: Any = None,
    seed: int = 0,
) -> dict[str, float]:
    """Seconds spent on validation (quarantine + GX events suite with vocabulary coverage).

    Args:
        num_events: synthetic events to generate (plus 0.1% planted bad rows).
        engines: which of "pandas" and "spark" to time.
        spark: a SparkSession to use (default: ``mirec.features.spark_session.get_spark()``).
        seed: generator seed.

    Returns:
        ``num_events``, ``gx_import_s`` (paid once per process, not in the totals) and
        ``<engine>_quarantine_s``, ``<engine>_suite_s``, ``<engine>_total_s``,
        ``<engine>_bad_rows`` per engine (+ ``spark_read_count_s``, one plain pass, for scale).
    """
    _, gx_import_s = _timed(importlib.import_module, "great_expectations")
    events = planted_events(num_events, seed)
    vocabulary = events[ITEM_ID].dropna().unique().tolist()
    params = SuiteParams(now=NOW, vocabulary=vocabulary)
    out: dict[str, float] = {"num_events": float(len(events)), "gx_import_s": gx_import_s}
    with tempfile.TemporaryDirectory(prefix="mirec-bench-validation-") as tmp:
        work = Path(tmp)
        if "pandas" in engines:
            out |= _pandas(events, params, work)
        if "spark" in engines:
            path = work / "events.parquet"
            write_events_parquet(events, path)
            if spark is None:
                from mirec.features.spark_session import get_spark

                spark = get_spark()
            out |= _spark(path, params, work, spark)
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:.2f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--engines", nargs="+", default=["pandas", "spark"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    timings = measure_overhead(args.events, engines=tuple(args.engines))
    result: dict[str, Any] = {
        **timings,
        "measured_at": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "validation_overhead.json").write_text(json.dumps(result, indent=2))
    rows = [[k, _cell(v)] for k, v in result.items()]
    table = format_table(["measure", "value"], rows)
    note = (
        "# Validation overhead\n\nQuarantine (row rules, parquet of bad rows) + GX `events` "
        "suite with vocabulary coverage, on synthetic long-tailed events with 0.1% planted bad "
        "rows. Seconds, one run; the machine is shared, see the load average.\n\n"
    )
    (RESULTS / "validation_overhead.md").write_text(note + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
