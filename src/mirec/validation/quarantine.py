"""Row-level quarantine of raw events (pandas and Spark): bad rows go to parquet with their reason.

Both engines interpret the one rule table ``mirec.data.rules`` (pandas: ``mirec.data.quality``,
Spark: ``rules_spark``) and give the same reasons on the same input. Rows a format loader could
not parse (``RawDataset.rejects``) join them. ONE writer (``write_quarantine``) stores every
rejected row in ``<out_dir>/quarantine/<stage>/part-00000.parquet`` (event columns, ``REASON``,
``SOURCE_LINE``; sorted by line) and the report in ``<out_dir>/quarantine/<stage>.report.json``
(``rows_in = rows_clean + rows_bad``, ``rows_bad = sum(bad_by_reason)``); both are written BEFORE
the step fails, so nothing is lost. Long user histories are valid: kept and only counted.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mirec.data.events import Dataset, LoadReport, RawDataset, bad_rows_frame, to_utc_timestamps
from mirec.data.quality import count_reasons, find_bad_rows
from mirec.data.rules import ordered_counts
from mirec.errors import ConfigError, DataFormatError, DataValidationError
from mirec.schema import (
    EVENT_TS,
    EVENT_TYPES,
    ITEM_ID,
    MIN_EVENT_TS,
    REASON,
    SOURCE_LINE,
    USER_ID,
)
from mirec.tables import format_table

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pyspark.sql import DataFrame as SparkDataFrame

logger = logging.getLogger(__name__)

QUARANTINE_DIR = "quarantine"
REPORT_SUFFIX = ".report.json"
LONG_HISTORY_EVENTS = 50  # users with more valid events than this are counted (info only)
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class QuarantineReport:
    """What a quarantine step read, kept and set aside.

    Attributes:
        stage: the step's name (the quarantine sub-directory).
        rows_in: rows read.
        rows_clean: rows that passed every rule.
        bad_by_reason: reason -> quarantined rows, in rule priority order.
        quarantine_path: the parquet directory of the bad rows, or None when there were none.
        bad_fraction: (rows_in - rows_clean) / rows_in (0 for no rows).
        max_bad_fraction: the tolerance the step was run with.
        long_history_threshold: users with more valid events than this are counted.
        long_history_users: how many users that is (valid and kept; info, not an error).
        max_user_events: the most valid events of one user.
    """

    stage: str
    rows_in: int
    rows_clean: int
    bad_by_reason: dict[str, int]
    quarantine_path: str | None
    bad_fraction: float
    max_bad_fraction: float = 1.0
    long_history_threshold: int = LONG_HISTORY_EVENTS
    long_history_users: int = 0
    max_user_events: int = 0

    @property
    def rows_bad(self) -> int:
        """Rows set aside."""
        return self.rows_in - self.rows_clean

    def summary(self) -> str:
        """A readable multi-line table: counts per reason, shares, tolerance and paths."""
        verdict = "FAILED" if self.bad_fraction > self.max_bad_fraction else "ok"
        rows = [
            [reason, f"{count:,}", f"{count / self.rows_in:.4%}" if self.rows_in else "-"]
            for reason, count in self.bad_by_reason.items()
        ]
        rows.append(["(all bad rows)", f"{self.rows_bad:,}", f"{self.bad_fraction:.4%}"])
        rows.append(["(clean rows)", f"{self.rows_clean:,}", ""])
        lines = [
            f"quarantine '{self.stage}' {verdict}: {self.rows_bad:,} of {self.rows_in:,} rows set "
            f"aside ({self.bad_fraction:.4%}; tolerance {self.max_bad_fraction:.4%})",
            format_table(["reason", "rows", "share"], rows),
            f"users with more than {self.long_history_threshold} valid events: "
            f"{self.long_history_users:,} (kept; longest history {self.max_user_events:,} events)",
            f"quarantined rows: {self.quarantine_path or 'none'}",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (+ ``rows_bad``)."""
        return {**asdict(self), "rows_bad": self.rows_bad}


def _stage_dir(out_dir: str | Path, stage: str) -> Path:
    if not _STAGE_NAME.match(stage):
        raise ConfigError(f"quarantine stage {stage!r} must be a plain name ([A-Za-z0-9_.-]+)")
    return Path(out_dir) / QUARANTINE_DIR / stage


def _fraction(rows_in: int, rows_clean: int) -> float:
    return (rows_in - rows_clean) / rows_in if rows_in else 0.0


def _finish(report: QuarantineReport, stage_dir: Path) -> QuarantineReport:
    """Write the report next to the quarantine, log it, and fail above the tolerance."""
    report_path = stage_dir.with_name(stage_dir.name + REPORT_SUFFIX)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    if report.bad_fraction > report.max_bad_fraction:
        raise DataValidationError(report.summary() + f"\nreport: {report_path}")
    logger.info("%s", report.summary())
    return report


# --- pandas ------------------------------------------------------------------------------------


def decode_bytes_ids(events: pd.DataFrame) -> pd.DataFrame:
    """Ids held as bytes become str, undecodable bytes as U+FFFD (so they are flagged)."""
    out = events
    for column in (USER_ID, ITEM_ID):
        if column not in events.columns or events[column].dtype != object:
            continue
        values = events[column]
        if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
            continue  # the common case, checked in C
        is_bytes = values.map(lambda v: isinstance(v, bytes | bytearray)).to_numpy(dtype=bool)
        if is_bytes.any():
            out = out.copy() if out is events else out
            fixed = values.to_numpy(dtype=object).copy()
            fixed[is_bytes] = [bytes(v).decode("utf-8", "replace") for v in fixed[is_bytes]]
            out[column] = fixed
    return out


def read_events_lenient(path: str | Path) -> pd.DataFrame:
    """Read an event parquet file or directory as-is; invalid UTF-8 in strings becomes U+FFFD.

    pyarrow refuses to turn invalid UTF-8 into Python str; such files are re-read with the string
    columns as bytes and decoded with replacement, so the quarantine can flag the rows.

    Raises:
        DataFormatError: the parquet cannot be read at all.
    """
    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise DataFormatError(str(path), None, f"cannot read parquet: {exc}") from exc
    try:
        return table.to_pandas()
    except pa.ArrowException:
        logger.warning("%s: strings that are not valid UTF-8; decoding with U+FFFD", path)
    strings = [i for i, f in enumerate(table.schema) if pa.types.is_string(f.type)]
    for i in strings:
        table = table.set_column(i, table.schema.field(i).name, table.column(i).cast(pa.binary()))
    frame = table.to_pandas()
    for i in strings:
        name = table.schema.field(i).name
        frame[name] = frame[name].map(
            lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        )
    return frame


def _escape(value: object) -> str:
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _writable(frame: pd.DataFrame) -> pd.DataFrame:
    """Make every column storable in parquet: mixed objects -> str, lone surrogates escaped."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        try:
            pa.array(out[column], from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError):
            notna = out[column].notna()
            fixed = out[column].astype(object).copy()
            fixed[notna] = out[column][notna].map(_escape)
            out[column] = fixed
    return out


def write_quarantine(bad: pd.DataFrame, stage_dir: Path) -> str | None:
    """The one quarantine writer: every rejected row, sorted by ``SOURCE_LINE``, as parquet.

    Returns:
        ``stage_dir`` (replaced), or None when there are no bad rows (the folder is removed).
    """
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    if bad.empty:
        return None
    stage_dir.mkdir(parents=True)
    if SOURCE_LINE in bad.columns:
        bad = bad.sort_values(SOURCE_LINE, kind="stable", na_position="last")
    table = pa.Table.from_pandas(_writable(bad.reset_index(drop=True)), preserve_index=False)
    pq.write_table(
        table,
        str(stage_dir / "part-00000.parquet"),
        coerce_timestamps="us",
        allow_truncated_timestamps=True,
    )
    return str(stage_dir)


def write_raw_events(events: pd.DataFrame, path: str | Path) -> Path:
    """Write parsed, not yet checked events (times as the source held them) for Spark."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(_writable(events), preserve_index=False)
    pq.write_table(table, str(out), coerce_timestamps="us", allow_truncated_timestamps=True)
    return out


def _with_rejects(bad: pd.DataFrame, rejects: pd.DataFrame | None) -> pd.DataFrame:
    """Loader rejects (as str columns) before the rule rejects, in one frame."""
    if rejects is None or rejects.empty:
        return bad
    return pd.concat([rejects.astype(object), bad.astype(object)], ignore_index=True)


def _report(
    stage: str,
    rows: tuple[int, int],
    bad: dict[str, int],
    path: str | None,
    max_bad_fraction: float,
    histories: tuple[int, int, int],
) -> QuarantineReport:
    rows_in, rows_clean = rows
    return QuarantineReport(
        stage=stage,
        rows_in=rows_in,
        rows_clean=rows_clean,
        bad_by_reason=ordered_counts(bad),
        quarantine_path=path,
        bad_fraction=_fraction(rows_in, rows_clean),
        max_bad_fraction=max_bad_fraction,
        long_history_threshold=histories[0],
        long_history_users=histories[1],
        max_user_events=histories[2],
    )


def _long_histories_pandas(clean: pd.DataFrame, threshold: int) -> tuple[int, int]:
    if clean.empty:
        return 0, 0
    sizes = clean[USER_ID].value_counts(sort=False).to_numpy()
    return int((sizes > threshold).sum()), int(sizes.max())


def quarantine_events_pandas(
    events: pd.DataFrame,
    *,
    now: datetime,
    epoch: datetime,
    out_dir: str | Path,
    max_bad_fraction: float,
    stage: str = "raw_events",
    known_event_types: Iterable[str] = EVENT_TYPES,
    long_history_threshold: int = LONG_HISTORY_EVENTS,
    rejects: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, QuarantineReport]:
    """Set aside the rows that break the event contract; fail above the tolerance.

    Args:
        events: [E] raw event rows (canonical columns; ``EVENT_TS`` may be unparsed;
            ``SOURCE_LINE`` when the loader knows it, else the row number 1..E is used).
        now: later rows are ``future_timestamp`` (naive = UTC).
        epoch: earlier rows are ``before_epoch`` (naive = UTC).
        out_dir: run directory; bad rows go to ``<out_dir>/quarantine/<stage>/``.
        max_bad_fraction: the step fails when the bad share is above this.
        stage: the step's name.
        known_event_types: accepted ``EVENT_TYPE`` values.
        long_history_threshold: users with more valid events are counted in the report.
        rejects: rows a format loader could not parse (``REASON``, ``SOURCE_LINE``, ...); they
            count as read and quarantined.

    Returns:
        (clean [E_ok] rows with ``EVENT_TS`` as datetime64[ns, UTC], no ``SOURCE_LINE`` and a
        fresh index, report).

    Raises:
        DataValidationError: bad share > ``max_bad_fraction``; the message is
            ``report.summary()`` (the quarantine and report files exist by then).
    """
    stage_dir = _stage_dir(out_dir, stage)
    frame = decode_bytes_ids(events).reset_index(drop=True)
    if SOURCE_LINE not in frame.columns:
        frame = frame.assign(**{SOURCE_LINE: np.arange(1, len(frame) + 1, dtype=np.int64)})
    reasons = find_bad_rows(frame, now=now, epoch=epoch, known_event_types=known_event_types)
    is_bad = reasons.notna().to_numpy()
    parsed = to_utc_timestamps(frame[EVENT_TS])  # one unit decision for the whole column
    clean = frame.loc[~is_bad].drop(columns=[SOURCE_LINE]).reset_index(drop=True)
    clean[EVENT_TS] = parsed[~is_bad].to_numpy()
    bad = frame.loc[is_bad].reset_index(drop=True)
    bad[REASON] = reasons.to_numpy(dtype=object)[is_bad]
    columns = [c for c in frame.columns if c != SOURCE_LINE] + [REASON, SOURCE_LINE]
    bad = _with_rejects(bad[columns], rejects)
    path = write_quarantine(bad, stage_dir)
    long_users, longest = _long_histories_pandas(clean, long_history_threshold)
    rows_in = len(frame) + (0 if rejects is None else len(rejects))
    report = _report(
        stage,
        (rows_in, len(clean)),
        count_reasons(bad),
        path,
        max_bad_fraction,
        (long_history_threshold, long_users, longest),
    )
    return clean, _finish(report, stage_dir)


# --- Spark -------------------------------------------------------------------------------------


def _long_histories_spark(clean: SparkDataFrame, threshold: int) -> tuple[int, int]:
    from pyspark.sql import functions as F

    per_user = clean.groupBy(USER_ID).count()
    row = per_user.agg(
        F.sum(F.when(F.col("count") > F.lit(threshold), 1).otherwise(0)).alias("long"),
        F.max("count").alias("longest"),
    ).first()
    if row is None or row["longest"] is None:
        return 0, 0
    return int(row["long"]), int(row["longest"])


def _collect(df: SparkDataFrame) -> pd.DataFrame:
    """``df`` on the driver; strings that are not valid UTF-8 come back with U+FFFD."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    try:
        return pd.DataFrame(df.toPandas())
    except pa.ArrowException:
        logger.warning("quarantined rows hold strings that are not UTF-8; decoding with U+FFFD")
    strings = [f.name for f in df.schema.fields if isinstance(f.dataType, T.StringType)]
    frame = pd.DataFrame(
        df.select(
            *[F.col(c).cast("binary").alias(c) if c in strings else F.col(c) for c in df.columns]
        ).toPandas()
    )
    for name in strings:
        frame[name] = frame[name].map(
            lambda v: bytes(v).decode("utf-8", "replace") if v is not None else None
        )
    return frame


def quarantine_events_spark(
    df: SparkDataFrame,
    *,
    now: datetime,
    epoch: datetime,
    out_dir: str | Path,
    max_bad_fraction: float,
    stage: str = "raw_events",
    known_event_types: Iterable[str] = EVENT_TYPES,
    long_history_threshold: int = LONG_HISTORY_EVENTS,
    rejects: pd.DataFrame | None = None,
) -> tuple[SparkDataFrame, QuarantineReport]:
    """The Spark twin of ``quarantine_events_pandas`` (same rules, reasons, writer and files).

    The annotated rows are materialised once (``localCheckpoint``), so counting, collecting the
    bad rows and reading the clean ones do not recompute the rules. The bad rows are collected
    to the driver for ``write_quarantine`` (they are few unless the step fails anyway).
    ``SOURCE_LINE`` is kept when the input has it (loaded files), else left null.

    Args:
        df: [E] raw event rows; ``EVENT_TS`` may be a timestamp, number or string column.
        now, epoch, out_dir, max_bad_fraction, stage, known_event_types, long_history_threshold,
        rejects: as in ``quarantine_events_pandas`` (``out_dir`` is a local path).

    Returns:
        (clean [E_ok] rows: the input columns with ``EVENT_TS`` as a UTC timestamp and without
        ``SOURCE_LINE``, report).

    Raises:
        DataValidationError: bad share > ``max_bad_fraction`` (files written first).
    """
    from pyspark.sql import functions as F

    from mirec.validation.rules_spark import (
        HELPER_COLUMNS,
        PARSED_TS,
        ROW_ORDER,
        annotate_bad_rows_spark,
    )

    stage_dir = _stage_dir(out_dir, stage)
    if SOURCE_LINE not in df.columns:
        df = df.withColumn(SOURCE_LINE, F.lit(None).cast("long"))
    annotated = annotate_bad_rows_spark(
        df, now=now, epoch=epoch, known_event_types=known_event_types
    ).localCheckpoint(eager=True)
    rows = annotated.groupBy(REASON).count().collect()
    rows_clean = sum(int(row["count"]) for row in rows if row[REASON] is None)
    rows_in = sum(int(row["count"]) for row in rows)
    bad_rows = annotated.filter(F.col(REASON).isNotNull()).orderBy(ROW_ORDER)
    columns = [c for c in df.columns if c != SOURCE_LINE] + [REASON, SOURCE_LINE]
    bad = _with_rejects(_collect(bad_rows.select(*columns)), rejects)
    path = write_quarantine(bad, stage_dir)
    clean = (
        annotated.filter(F.col(REASON).isNull())
        .withColumn(EVENT_TS, F.col(PARSED_TS))
        .drop(REASON, SOURCE_LINE, *HELPER_COLUMNS)
    )
    long_users, longest = _long_histories_spark(clean, long_history_threshold)
    report = _report(
        stage,
        (rows_in + (0 if rejects is None else len(rejects)), rows_clean),
        count_reasons(bad),
        path,
        max_bad_fraction,
        (long_history_threshold, long_users, longest),
    )
    return clean, _finish(report, stage_dir)


def quarantine_dataset(
    raw: RawDataset,
    *,
    out_dir: str | Path,
    max_bad_fraction: float,
    now: datetime | None = None,
    epoch: datetime = MIN_EVENT_TS,
) -> tuple[Dataset, QuarantineReport]:
    """The pandas quarantine of a parsed dataset (loader rejects included) as a clean Dataset.

    Returns:
        (the Dataset of clean events and its catalogs, the report written under ``out_dir``).

    Raises:
        DataValidationError: bad share > ``max_bad_fraction`` (files written first).
    """
    from mirec.data.loaders import catalogs

    clean, report = quarantine_events_pandas(
        raw.events,
        now=now or datetime.now(UTC),
        epoch=epoch,
        out_dir=out_dir,
        max_bad_fraction=max_bad_fraction,
        rejects=raw.rejects,
    )
    items, users = catalogs(raw, clean)
    bad = pd.read_parquet(report.quarantine_path) if report.quarantine_path else None
    load_report = LoadReport(
        raw.source,
        report.rows_in,
        report.rows_clean,
        dict(report.bad_by_reason),
        bad if bad is not None else bad_rows_frame(clean),
    )
    return Dataset(raw.name, clean, items, users, load_report), report
