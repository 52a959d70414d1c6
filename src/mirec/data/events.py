"""The canonical event log (a pandas DataFrame), its parquet I/O and the Dataset it lives in.

Columns (names from ``mirec.schema``): ``USER_ID`` (str), ``ITEM_ID`` (str), ``EVENT_TS``
(datetime64[ns, UTC]), ``EVENT_TYPE`` (str), ``SEQ_POS`` (int64, position of the event in its
source) and optionally ``EVENT_ID`` (str). Event order is ALWAYS (``EVENT_TS``, ``SEQ_POS``):
public files have day-level timestamps with many ties, or no timestamps at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mirec.data.rules import MILLIS_THRESHOLD
from mirec.errors import DataFormatError
from mirec.schema import (
    EVENT_ID,
    EVENT_INTERACTION,
    EVENT_TS,
    EVENT_TYPE,
    ITEM_ID,
    NO_TIME_BASE,
    REASON,
    SEQ_POS,
    SOURCE_LINE,
    USER_ID,
)

TS_DTYPE = pd.DatetimeTZDtype(unit="ns", tz="UTC")
REQUIRED_COLUMNS = (USER_ID, ITEM_ID, EVENT_TS)


@dataclass(frozen=True)
class LoadReport:
    """What a loader read, kept and set aside.

    Attributes:
        source: the file or directory read (or ``"synthetic"``).
        rows_read: events parsed from the source.
        rows_kept: events that passed every row rule.
        bad_by_reason: reason -> number of quarantined events.
        bad_rows: the quarantined events: event columns + ``REASON`` + ``SOURCE_LINE``.
    """

    source: str
    rows_read: int
    rows_kept: int
    bad_by_reason: dict[str, int]
    bad_rows: pd.DataFrame = field(repr=False)

    @property
    def bad_fraction(self) -> float:
        """Share of read rows that were set aside (0 for an empty source)."""
        return (self.rows_read - self.rows_kept) / self.rows_read if self.rows_read else 0.0


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: clean events plus item catalog and user profiles.

    Attributes:
        name: short name (``"Beauty"``, ``"ml-100k"``, ``"synthetic"``).
        events: clean canonical events in source order (``SEQ_POS`` ascending).
        items: ``ITEM_ID`` + ``ITEM_ATTRIBUTES`` (list[str]), optionally ``ITEM_TEXT``.
        users: ``USER_ID`` + ``USER_ATTRIBUTES`` (list[str] of ``"key=value"`` tokens).
        report: the load report (bad rows and counts).
        planted: ground truth of synthetic data (``item_cluster``, ``user_clusters``), else None.
    """

    name: str
    events: pd.DataFrame = field(repr=False)
    items: pd.DataFrame = field(repr=False)
    users: pd.DataFrame = field(repr=False)
    report: LoadReport = field(repr=False)
    planted: dict[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RawDataset:
    """What a format loader parsed, before any row rule ran.

    Attributes:
        name: short name of the dataset.
        source: the file or directory read.
        events: [E] parsed rows: canonical columns with ``EVENT_TS`` as the source holds it
            (strings, numbers or datetimes), ``SEQ_POS`` and ``SOURCE_LINE``.
        rejects: rows the loader could not parse (e.g. a line with the wrong field count):
            the canonical columns it could read (as str), ``REASON`` and ``SOURCE_LINE``.
        item_attrs: item id -> attribute tokens (catalog side files).
        user_attrs: user id -> attribute tokens.
        item_text: item id -> text.
    """

    name: str
    source: str
    events: pd.DataFrame = field(repr=False)
    rejects: pd.DataFrame = field(repr=False)
    item_attrs: dict[str, list[str]] = field(default_factory=dict, repr=False)
    user_attrs: dict[str, list[str]] = field(default_factory=dict, repr=False)
    item_text: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def rows_read(self) -> int:
        """Every data row of the source: parsed plus rejected by the loader."""
        return len(self.events) + len(self.rejects)


def to_utc_timestamps(values: pd.Series | np.ndarray | list[Any]) -> pd.Series:
    """Coerce timestamps to datetime64[ns, UTC]; anything unparsable or out of range becomes NaT.

    Numbers (and numeric strings) are unix seconds, or milliseconds when most of them are
    (``mirec.data.rules``); other strings are ISO 8601 (naive = UTC); datetimes are converted
    to UTC (naive = UTC).
    """
    return parse_times(values)[0]


def parse_times(values: pd.Series | np.ndarray | list[Any]) -> tuple[pd.Series, np.ndarray]:
    """Parse raw times once: (datetime64[ns, UTC] with NaT where unparsable or outside pandas'
    range, float64 unix seconds with NaN ONLY where unparsable).

    The seconds keep times beyond pandas' range (years after 2262), so the row rules can tell
    a far-future time (``future_timestamp``) from one that is not a time (``bad_timestamp``).
    """
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
        series.dtype
    ):
        stamps = series.dt.tz_convert("UTC") if series.dt.tz else series.dt.tz_localize("UTC")
        stamps = stamps.astype(TS_DTYPE)
        return stamps, _seconds_of(stamps)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series):
        seconds = unix_seconds(series.to_numpy(dtype="float64", na_value=np.nan))
        return _from_unix_seconds(pd.Series(seconds, index=series.index)), seconds
    numeric = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    seconds = unix_seconds(numeric)
    out = _from_unix_seconds(pd.Series(seconds, index=series.index))
    rest = np.isnan(numeric) & series.notna().to_numpy()
    if rest.any():
        text = series[rest].astype(str)
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        out[rest] = parsed.astype(TS_DTYPE)
        rest_seconds = _seconds_of(parsed.astype(TS_DTYPE))
        beyond = np.isnan(rest_seconds)
        rest_seconds[beyond] = [_iso_seconds(t) for t in text[beyond]]
        seconds[rest] = rest_seconds
    return out, seconds


def unix_seconds(numbers: np.ndarray) -> np.ndarray:
    """float64 unix values [E] -> seconds: milliseconds when more than half of the finite ones
    are at least ``MILLIS_THRESHOLD`` in absolute value (non-finite values become NaN)."""
    finite = np.isfinite(numbers)
    large = int((np.abs(numbers[finite]) >= MILLIS_THRESHOLD).sum())
    scale = 1e-3 if finite.any() and 2 * large > int(finite.sum()) else 1.0
    return np.where(finite, numbers * scale, np.nan)


def _seconds_of(stamps: pd.Series) -> np.ndarray:
    ns = stamps.array.asi8.astype("float64")
    ns[stamps.isna().to_numpy()] = np.nan
    return ns / 1e9


def _iso_seconds(text: str) -> float:
    """Unix seconds of an ISO 8601 time outside pandas' range (years 1..9999), else NaN."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return float("nan")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    try:
        return (moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
    except OverflowError:
        return float("nan")


def _from_unix_seconds(seconds: pd.Series) -> pd.Series:
    """Float unix seconds -> datetime64[ns, UTC]; NaN and values outside the ns range -> NaT."""
    values = seconds.to_numpy(dtype="float64", na_value=np.nan)
    ok = np.isfinite(values) & (np.abs(values) < 9.2e9)
    ns = np.full(len(values), np.iinfo(np.int64).min, dtype=np.int64)  # int64 min is NaT
    ns[ok] = np.round(values[ok] * 1e9).astype(np.int64)
    stamps = pd.Series(ns.view("datetime64[ns]"), index=seconds.index).dt.tz_localize("UTC")
    return stamps.astype(TS_DTYPE)


def no_time_timestamps(seq_pos: np.ndarray) -> pd.Series:
    """Timestamps for sources without time: ``NO_TIME_BASE + seq_pos`` seconds (UTC)."""
    base = pd.Timestamp(NO_TIME_BASE)
    return pd.Series(base + pd.to_timedelta(np.asarray(seq_pos, dtype=np.int64), unit="s"))


def make_events(
    user_ids: Any,
    item_ids: Any,
    event_ts: Any,
    seq_pos: Any | None = None,
    event_type: Any = EVENT_INTERACTION,
    event_id: Any | None = None,
) -> pd.DataFrame:
    """Build a canonical event frame from columns (ids become str, timestamps UTC).

    Args:
        user_ids: [E] external user ids.
        item_ids: [E] external item ids.
        event_ts: [E] timestamps (see ``to_utc_timestamps``).
        seq_pos: [E] source positions; default 0..E-1.
        event_type: one type for all rows or [E] types.
        event_id: optional [E] dedupe keys.
    """
    frame = pd.DataFrame(
        {
            USER_ID: _as_str(pd.Series(user_ids, dtype=object)).reset_index(drop=True),
            ITEM_ID: _as_str(pd.Series(item_ids, dtype=object)).reset_index(drop=True),
            EVENT_TS: to_utc_timestamps(pd.Series(event_ts)).reset_index(drop=True),
        }
    )
    frame[EVENT_TYPE] = event_type if isinstance(event_type, str) else list(event_type)
    pos = np.arange(len(frame), dtype=np.int64) if seq_pos is None else seq_pos
    frame[SEQ_POS] = np.asarray(pos, dtype=np.int64)
    if event_id is not None:
        frame[EVENT_ID] = _as_str(pd.Series(event_id, dtype=object)).to_numpy(dtype=object)
    return frame


def _as_str(values: pd.Series) -> pd.Series:
    """Non-null values -> str, nulls kept as None (object dtype)."""
    out = values.astype(object)
    notna = out.notna()
    out[notna] = out[notna].map(str)
    out[~notna] = None
    return out


def empty_events() -> pd.DataFrame:
    """A canonical event frame with no rows."""
    return make_events([], [], pd.Series([], dtype=TS_DTYPE))


def sort_events(events: pd.DataFrame) -> pd.DataFrame:
    """Sort by (``USER_ID``, ``EVENT_TS``, ``SEQ_POS``), stable; the index is reset."""
    return events.sort_values([USER_ID, EVENT_TS, SEQ_POS], kind="stable").reset_index(drop=True)


def write_events_parquet(events: pd.DataFrame, path: str | Path) -> None:
    """Write canonical events to one parquet file (UTC ``TIMESTAMP_MICROS``, as Spark needs).

    Timestamps are floored to microseconds first (Spark refuses nanoseconds).
    """
    frame = events.copy()
    frame[EVENT_TS] = to_utc_timestamps(frame[EVENT_TS]).dt.floor("us")
    frame[SEQ_POS] = frame[SEQ_POS].astype(np.int64)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path), coerce_timestamps="us", allow_truncated_timestamps=False)


def read_events_parquet(path: str | Path) -> pd.DataFrame:
    """Read canonical events from a parquet file or a directory of parquet files.

    Raises:
        DataFormatError: unreadable parquet, or a required column is missing.
    """
    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise DataFormatError(str(path), None, f"cannot read parquet: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataFormatError(str(path), None, f"missing event columns {missing}")
    try:
        frame = table.to_pandas()
    except pa.ArrowException as exc:
        raise DataFormatError(
            str(path), None, f"cannot decode parquet (e.g. ids that are not UTF-8): {exc}"
        ) from exc
    frame[EVENT_TS] = to_utc_timestamps(frame[EVENT_TS])
    for column in (USER_ID, ITEM_ID):
        frame[column] = _as_str(frame[column])
    if EVENT_TYPE not in frame.columns:
        frame[EVENT_TYPE] = EVENT_INTERACTION
    if SEQ_POS not in frame.columns:
        frame[SEQ_POS] = np.arange(len(frame), dtype=np.int64)
    frame[SEQ_POS] = frame[SEQ_POS].astype(np.int64)
    return frame


def bad_rows_frame(events: pd.DataFrame) -> pd.DataFrame:
    """An empty quarantine frame with the columns of ``events`` + ``REASON`` + ``SOURCE_LINE``."""
    frame = events.iloc[:0].copy()
    frame[REASON] = pd.Series([], dtype=object)
    frame[SOURCE_LINE] = pd.Series([], dtype=np.int64)
    return frame


def event_timestamps_us(events: pd.DataFrame) -> np.ndarray:
    """int64 [E] microseconds since the unix epoch of ``events[EVENT_TS]``."""
    return to_utc_timestamps(events[EVENT_TS]).array.asi8 // 1000
