"""Loaders that turn public dataset formats into a Dataset of canonical events.

Loading is two steps. ``read_*`` / ``read_raw_dataset`` PARSE a format into a ``RawDataset``:
every row with its source line, times as the file holds them, and the lines the parser could
not read (``malformed_line``) set apart. ``clean_dataset`` then applies the row rules of
``mirec.data.rules`` (pandas, ``mirec.data.quality``): bad rows go to ``report.bad_rows`` with
their reason and line, and loading fails (``DataValidationError``) when their share passes
``max_bad_fraction``. ``load_*`` / ``load_dataset`` do both. A file in the wrong FORMAT raises
``DataFormatError(path, line, problem)``. Tables (CSV, parquet, RecBole ``.inter``) take a
column mapping (``mirec.data.columns``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mirec.config import DataConfig
from mirec.data.columns import TABLE_COLUMNS, resolve_columns
from mirec.data.events import (
    Dataset,
    LoadReport,
    RawDataset,
    no_time_timestamps,
    to_utc_timestamps,
)
from mirec.data.formats import (
    Rows,
    parse_int_lines,
    read_atomic_rows,
    read_csv_rows,
    recbole_attributes,
    s3rec_attributes,
)
from mirec.data.quality import (
    check_bad_fraction,
    count_reasons,
    find_bad_rows,
    split_bad_rows,
    summarize_report,
)
from mirec.data.rules import MALFORMED_LINE
from mirec.data.synthetic import generate
from mirec.data.vocab import sort_ids
from mirec.errors import ConfigError, DataFormatError
from mirec.schema import (
    EVENT_ID,
    EVENT_INTERACTION,
    EVENT_TS,
    EVENT_TYPE,
    ITEM_ATTRIBUTES,
    ITEM_ID,
    ITEM_TEXT,
    MIN_EVENT_TS,
    REASON,
    SEQ_POS,
    SOURCE_LINE,
    USER_ATTRIBUTES,
    USER_ID,
)

logger = logging.getLogger(__name__)

SYNTHETIC_NAMES = ("demo", "synthetic")
# The one default tolerance: the config's ``data.max_bad_fraction``.
DEFAULT_MAX_BAD_FRACTION: float = DataConfig.model_fields["max_bad_fraction"].default


# --- shared ------------------------------------------------------------------------------------
def clean_dataset(
    raw: RawDataset,
    *,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    now: datetime | None = None,
) -> Dataset:
    """Apply the row rules to a parsed dataset, check the tolerance and assemble the Dataset.

    The report's bad rows are the loader's rejects followed by the rule rejects, each with its
    ``REASON`` and ``SOURCE_LINE``; ``rows_read = rows_kept + len(bad_rows)``. The item and
    user tables hold every id of the CLEAN events plus every id with attributes.

    Raises:
        DataValidationError: the bad share is above ``max_bad_fraction``.
    """
    events = raw.events
    reasons = find_bad_rows(events, now=now or datetime.now(UTC), epoch=MIN_EVENT_TS)
    clean, bad = split_bad_rows(events.drop(columns=[SOURCE_LINE]), reasons, events[SOURCE_LINE])
    is_bad = reasons.notna().to_numpy()
    clean[EVENT_TS] = to_utc_timestamps(events[EVENT_TS]).to_numpy()[~is_bad]  # one unit per column
    bad = pd.concat([raw.rejects, bad], ignore_index=True) if len(raw.rejects) else bad
    report = LoadReport(raw.source, raw.rows_read, len(clean), count_reasons(bad), bad)
    if len(bad):
        logger.warning("%s", summarize_report(report))
    check_bad_fraction(report, max_bad_fraction)
    items, users = catalogs(raw, clean)
    logger.info(
        "loaded %s: %d events, %d items, %d users", raw.name, len(clean), len(items), len(users)
    )
    return Dataset(name=raw.name, events=clean, items=items, users=users, report=report)


def catalogs(raw: RawDataset, clean: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(items, users) tables: every id of ``clean`` events or with attributes, in vocab order."""
    items = _id_table(clean[ITEM_ID].to_numpy(), ITEM_ID, ITEM_ATTRIBUTES, raw.item_attrs)
    if raw.item_text:
        items[ITEM_TEXT] = [raw.item_text.get(i, "") for i in items[ITEM_ID]]
    users = _id_table(clean[USER_ID].to_numpy(), USER_ID, USER_ATTRIBUTES, raw.user_attrs)
    return items, users


def _events_frame(
    users: np.ndarray, items: np.ndarray, ts: pd.Series, lines: np.ndarray
) -> pd.DataFrame:
    """Raw events from object id arrays [E], raw times [E] and lines [E]; SEQ_POS = 0..E-1."""
    frame = pd.DataFrame({USER_ID: users, ITEM_ID: items})
    frame[EVENT_TS] = ts.reset_index(drop=True)
    frame[EVENT_TYPE] = EVENT_INTERACTION
    frame[SEQ_POS] = np.arange(len(frame), dtype=np.int64)
    frame[SOURCE_LINE] = np.asarray(lines, dtype=np.int64)
    return frame


def _rejects(found: Rows, chosen: dict[str, str]) -> pd.DataFrame:
    """The malformed lines of ``found`` as quarantine rows (fields read by position, as str)."""
    position = {name: i for i, name in enumerate(found.header)}
    records = []
    for line, fields in found.malformed:
        row: dict[str, object] = {
            canonical: fields[position[column]] if position[column] < len(fields) else None
            for canonical, column in chosen.items()
            if canonical != SEQ_POS
        }
        row[REASON] = MALFORMED_LINE
        row[SOURCE_LINE] = line
        records.append(row)
    columns = [c for c in TABLE_COLUMNS if c in chosen and c != SEQ_POS] + [REASON, SOURCE_LINE]
    frame = pd.DataFrame(records, columns=columns).astype(object)
    frame[SOURCE_LINE] = frame[SOURCE_LINE].astype(np.int64)
    return frame


def no_rejects() -> pd.DataFrame:
    """An empty rejects frame."""
    return pd.DataFrame(
        {REASON: pd.Series([], dtype=object), SOURCE_LINE: pd.Series([], dtype=np.int64)}
    )


def _id_table(
    ids: np.ndarray, id_column: str, attr_column: str, attrs: dict[str, list[str]]
) -> pd.DataFrame:
    """A catalog of every id in ``ids`` or ``attrs`` (vocabulary order) with attribute lists."""
    known = pd.unique(pd.Series(ids, dtype=object).dropna())
    all_ids = sort_ids(list(set(known.tolist()) | set(attrs)))
    return pd.DataFrame(
        {
            id_column: np.asarray(all_ids, dtype=object),
            attr_column: [attrs.get(i, []) for i in all_ids],
        }
    )


# --- S3-Rec text files --------------------------------------------------------------------------
def _s3rec_paths(path: Path) -> tuple[Path, Path | None, Path | None]:
    """(sequence file, optional time file, optional attribute JSON) for a directory or .txt."""
    if path.is_dir():
        candidates = sorted(p for p in path.glob("*.txt") if not p.stem.endswith("_time"))
        preferred = [p for p in candidates if p.stem == path.name]
        if len(preferred) == 1 or len(candidates) == 1:
            path = (preferred or candidates)[0]
        else:
            found = [p.name for p in candidates]
            raise DataFormatError(str(path), None, f"expected one <Name>.txt, found {found}")
    if not path.is_file():
        raise DataFormatError(str(path), None, "no such S3-Rec sequence file")
    time_file = path.with_name(f"{path.stem}_time.txt")
    attr_file = path.with_name(f"{path.stem}_item2attributes.json")
    return (
        path,
        time_file if time_file.is_file() else None,
        attr_file if attr_file.is_file() else None,
    )


def _s3rec_times(
    time_file: Path, seq_file: Path, users: np.ndarray, lengths: np.ndarray, lines: np.ndarray
) -> np.ndarray:
    """int64 [E] unix seconds from ``<Name>_time.txt``, checked to line up with the sequences."""
    t_users, t_values, t_lengths, t_lines = parse_int_lines(time_file)
    for row in range(min(len(users), len(t_users))):
        if t_users[row] != users[row] or t_lengths[row] != lengths[row]:
            raise DataFormatError(
                str(time_file),
                int(t_lines[row]),
                f"user {t_users[row]} with {t_lengths[row]} timestamps does not line up with "
                f"{seq_file.name}:{lines[row]} (user {users[row]} with {lengths[row]} items)",
            )
    if len(t_users) != len(users):
        line = int(t_lines[len(users)]) if len(t_users) > len(users) else None
        raise DataFormatError(
            str(time_file), line, f"{len(t_users)} users but {seq_file.name} has {len(users)}"
        )
    return t_values


def read_s3rec(path: str | Path) -> RawDataset:
    """Parse S3-Rec style ``<Name>.txt`` (+ ``_time.txt``, ``_item2attributes.json``).

    Lines are ``user item item ...`` (time order). ``SEQ_POS`` is the global position of the
    item token in the file (line-major). With ``<Name>_time.txt`` (lines must line up: same
    user, same length) ``EVENT_TS`` is its unix (day) timestamps; without it ``EVENT_TS`` is
    ``NO_TIME_BASE + SEQ_POS`` seconds. Item attributes become tokens ``"a<id>"``.

    Args:
        path: the directory holding ``<Name>.txt`` or the ``.txt`` file itself.

    Raises:
        DataFormatError: a non-integer token, a misaligned time file or broken JSON.
    """
    seq_file, time_file, attr_file = _s3rec_paths(Path(path))
    users, items, lengths, lines = parse_int_lines(seq_file)
    event_users = np.repeat(users.astype(str).astype(object), lengths)
    event_items = items.astype(str).astype(object)
    if time_file is not None:
        ts = pd.Series(_s3rec_times(time_file, seq_file, users, lengths, lines))
    else:
        logger.warning("%s has no %s: times are synthesized", seq_file, f"{seq_file.stem}_time.txt")
        ts = no_time_timestamps(np.arange(len(event_items)))
    events = _events_frame(event_users, event_items, ts, np.repeat(lines, lengths))
    attrs = s3rec_attributes(attr_file) if attr_file is not None else {}
    return RawDataset(seq_file.stem, str(seq_file), events, no_rejects(), item_attrs=attrs)


def load_s3rec(path: str | Path, *, max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION) -> Dataset:
    """``read_s3rec`` then ``clean_dataset`` (fails when a larger share of events is bad)."""
    return clean_dataset(read_s3rec(path), max_bad_fraction=max_bad_fraction)


# --- RecBole atomic files -----------------------------------------------------------------------
def _recbole_paths(path: Path) -> tuple[Path, Path | None, Path | None]:
    """(.inter, optional .user, optional .item) for a directory, a prefix or the .inter file."""
    if path.is_dir():
        found = sorted(path.glob("*.inter"))
        if len(found) != 1:
            raise DataFormatError(str(path), None, f"expected one .inter file, found {found}")
        inter = found[0]
    elif path.suffix == ".inter":
        inter = path
    else:
        inter = path.with_name(path.name + ".inter")
    if not inter.is_file():
        raise DataFormatError(str(inter), None, "no such RecBole .inter file")
    user, item = inter.with_suffix(".user"), inter.with_suffix(".item")
    return inter, user if user.is_file() else None, item if item.is_file() else None


def read_recbole(path: str | Path, columns: dict[str, str] | None = None) -> RawDataset:
    """Parse RecBole atomic files ``<name>.inter`` (+ ``.user``, ``.item``).

    The ``.inter`` header is ``name:type`` fields, matched like a table's columns
    (``user_id``, ``item_id``, ``timestamp`` ...; ``mirec.data.columns``); lines with the wrong
    field count are rejected (``malformed_line``). ``SEQ_POS`` is the row number in the .inter
    file, so rows with the same timestamp keep their file order. Every non-id ``.user`` column
    becomes ``"col=value"`` tokens; ``.item`` columns too (one per value of a ``token_seq``),
    except title/text columns, kept as ``ITEM_TEXT``.

    Args:
        path: a directory holding one ``.inter``, the ``.inter`` file, or its path prefix.
        columns: canonical column -> ``.inter`` field name.

    Raises:
        DataFormatError: missing header or missing id columns.
    """
    inter, user_file, item_file = _recbole_paths(Path(path))
    _, found = read_atomic_rows(inter)
    frame = pd.DataFrame(found.rows, columns=found.header, dtype=object)
    events, rejects = _table_events(frame, found, columns, str(inter))
    item_attrs: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    if item_file is not None:
        _, item_attrs, texts = recbole_attributes(item_file)
    user_attrs = recbole_attributes(user_file)[1] if user_file is not None else {}
    return RawDataset(inter.stem, str(inter), events, rejects, item_attrs, user_attrs, texts)


def load_recbole(
    path: str | Path, *, max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION
) -> Dataset:
    """``read_recbole`` then ``clean_dataset`` (fails when a larger share of events is bad)."""
    return clean_dataset(read_recbole(path), max_bad_fraction=max_bad_fraction)


# --- generic CSV / parquet ------------------------------------------------------------------------
def _read_parquet_rows(path: Path) -> tuple[pd.DataFrame, Rows]:
    try:
        frame = pq.read_table(str(path)).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        raise DataFormatError(str(path), None, f"cannot read parquet: {exc}") from exc
    lines = np.arange(len(frame), dtype=np.int64) + 1  # parquet: the row number
    return frame, Rows([str(c) for c in frame.columns], [], lines, [])


def _table_events(
    frame: pd.DataFrame, found: Rows, columns: dict[str, str] | None, source: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(raw events, loader rejects) of a table whose columns are matched to the canonical ones."""
    chosen = resolve_columns(found.header, columns, source)
    present = {name: frame[col] for name, col in chosen.items()}
    ids = {k: _ids(present[k]) for k in (USER_ID, ITEM_ID)}
    seq_pos = np.arange(len(frame), dtype=np.int64)
    if SEQ_POS in present:
        seq_pos = pd.to_numeric(present[SEQ_POS], errors="coerce").fillna(-1).to_numpy(np.int64)
    ts = present[EVENT_TS] if EVENT_TS in present else no_time_timestamps(seq_pos)
    events = _events_frame(ids[USER_ID], ids[ITEM_ID], ts, found.lines)
    events[SEQ_POS] = seq_pos
    if EVENT_TYPE in present:
        events[EVENT_TYPE] = present[EVENT_TYPE].to_numpy(dtype=object)
    if EVENT_ID in present:
        events[EVENT_ID] = _ids(present[EVENT_ID])
    return events, _rejects(found, chosen)


def _ids(values: pd.Series) -> np.ndarray:
    """object [E]: str ids, None for nulls."""
    out = values.astype(object).to_numpy()
    notna = pd.notna(out)
    out[notna] = [str(v) for v in out[notna]]
    out[~notna] = None
    return out


def read_table(path: str | Path, columns: dict[str, str] | None = None) -> RawDataset:
    """Parse events from a CSV file (with a header row) or a parquet file / directory.

    Columns are matched by ``mirec.data.columns.resolve_columns`` (explicit mapping, canonical
    name, alias); ``USER_ID`` and ``ITEM_ID`` are required; ``EVENT_TS`` (unix seconds or
    milliseconds, or ISO 8601, naive = UTC), ``EVENT_TYPE``, ``EVENT_ID`` and ``SEQ_POS`` are
    optional. Without ``SEQ_POS`` it is the row number; without ``EVENT_TS`` it is
    ``NO_TIME_BASE + SEQ_POS`` seconds (with a warning). CSV lines with the wrong number of
    fields are rejected (``malformed_line``) with their line.

    Args:
        path: the file (``.csv``, ``.parquet``) or a parquet directory.
        columns: canonical column -> source column.

    Raises:
        ConfigError: the mapping names a column that is not canonical.
        DataFormatError: unreadable file or header, a mapped column is missing, or no user /
            item column.
    """
    path = Path(path)
    if path.is_dir() or path.suffix == ".parquet":
        frame, found = _read_parquet_rows(path)
    else:
        found = read_csv_rows(path)
        frame = pd.DataFrame(found.rows, columns=found.header, dtype=object)
        frame = frame.where(frame != "", None)
    events, rejects = _table_events(frame, found, columns, str(path))
    name = path.stem if path.suffix else path.name
    return RawDataset(name, str(path), events, rejects)


def load_table(
    path: str | Path,
    mapping: dict[str, str] | None = None,
    *,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> Dataset:
    """``read_table`` then ``clean_dataset`` (fails when a larger share of events is bad)."""
    return clean_dataset(read_table(path, mapping), max_bad_fraction=max_bad_fraction)


# --- dispatch ------------------------------------------------------------------------------------
EVENTS_FILE = "events.parquet"  # the files of a mirec dataset directory
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"


def read_side_table(path: Path, id_column: str) -> pd.DataFrame | None:
    """A dataset directory's items / users table (ids as str), or None when the file is absent.

    Raises:
        DataFormatError: unreadable parquet or no ``id_column``, naming the file.
    """
    if not path.is_file():
        return None
    try:
        frame = pq.read_table(str(path)).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        raise DataFormatError(str(path), None, f"cannot read parquet: {exc}") from exc
    if id_column not in frame.columns:
        raise DataFormatError(str(path), None, f"missing column {id_column!r}")
    frame[id_column] = frame[id_column].astype(str).astype(object)
    return frame


def _tokens(frame: pd.DataFrame | None, id_column: str, column: str) -> dict[str, list[str]]:
    if frame is None or column not in frame.columns:
        return {}
    return {
        key: [str(t) for t in value]
        for key, value in zip(frame[id_column], frame[column], strict=True)
        if value is not None and len(value)
    }


def read_dataset_directory(path: Path, columns: dict[str, str] | None = None) -> RawDataset:
    """A mirec dataset directory: ``events.parquet`` read as a table, the catalog side files
    (``items.parquet``: attributes and text; ``users.parquet``: profile tokens) as attributes."""
    raw = read_table(path / EVENTS_FILE, columns)
    items = read_side_table(path / ITEMS_FILE, ITEM_ID)
    users = read_side_table(path / USERS_FILE, USER_ID)
    text: dict[str, str] = {}
    if items is not None and ITEM_TEXT in items.columns:
        text = {k: str(v) for k, v in zip(items[ITEM_ID], items[ITEM_TEXT], strict=True) if v}
    return replace(
        raw,
        name=path.name,
        source=str(path),
        item_attrs=_tokens(items, ITEM_ID, ITEM_ATTRIBUTES),
        user_attrs=_tokens(users, USER_ID, USER_ATTRIBUTES),
        item_text=text,
    )


def read_raw_dataset(path_or_name: str | Path, columns: dict[str, str] | None = None) -> RawDataset:
    """Parse a dataset, telling its format from the name or path (no row rule applied yet).

    ``"demo"`` / ``"synthetic"`` -> ``synthetic.generate()``; a mirec dataset directory
    (``events.parquet`` beside optional ``items.parquet`` / ``users.parquet``, as the pipeline's
    steps and ``mirec events export`` write it) -> its events and side tables; a directory with
    a ``.inter`` file
    or a path prefix of one -> RecBole; a directory with ``<Name>.txt`` or a ``.txt`` file ->
    S3-Rec; ``.csv`` / ``.parquet`` files or a directory of parquet files -> table.

    Args:
        path_or_name: the path, or a synthetic name.
        columns: canonical column -> source column (tables and RecBole files only).

    Raises:
        ConfigError: ``columns`` given for a format without named columns.
        DataFormatError: the path does not exist or its format cannot be told.
    """
    text = str(path_or_name)
    if text in SYNTHETIC_NAMES:
        _no_columns(columns, text)
        return synthetic_raw()
    path = Path(text)
    if path.is_dir():
        if (path / EVENTS_FILE).is_file():
            return read_dataset_directory(path, columns)
        if any(path.glob("*.inter")):
            return read_recbole(path, columns)
        if any(path.glob("*.txt")):
            _no_columns(columns, text)
            return read_s3rec(path)
        if any(path.glob("*.parquet")):
            return read_table(path, columns)
    elif path.is_file():
        if path.suffix == ".inter":
            return read_recbole(path, columns)
        if path.suffix == ".txt":
            _no_columns(columns, text)
            return read_s3rec(path)
        if path.suffix in (".csv", ".parquet"):
            return read_table(path, columns)
    elif path.with_name(path.name + ".inter").is_file():
        return read_recbole(path, columns)
    else:
        raise DataFormatError(text, None, f"no such file or directory (or use {SYNTHETIC_NAMES})")
    raise DataFormatError(
        text, None, "cannot tell the format: expected <Name>.txt, .inter, .csv or .parquet"
    )


def _no_columns(columns: dict[str, str] | None, source: str) -> None:
    if columns:
        raise ConfigError(f"{source}: --columns applies to tables (CSV, parquet, .inter) only")


def synthetic_raw() -> RawDataset:
    """The generated demo dataset as a ``RawDataset`` (its rows all pass the rules)."""
    ds = generate()
    events = ds.events.copy()
    events[SOURCE_LINE] = np.arange(len(events), dtype=np.int64) + 1
    items = dict(zip(ds.items[ITEM_ID], ds.items[ITEM_ATTRIBUTES], strict=True))
    users = dict(zip(ds.users[USER_ID], ds.users[USER_ATTRIBUTES], strict=True))
    return RawDataset(ds.name, "synthetic", events, no_rejects(), items, users)


def load_dataset(
    path_or_name: str | Path,
    *,
    columns: dict[str, str] | None = None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> Dataset:
    """``read_raw_dataset`` then ``clean_dataset``; ``"demo"`` returns the generated dataset.

    Raises:
        DataFormatError: the path does not exist or its format cannot be told.
        DataValidationError: the bad share is above ``max_bad_fraction``.
    """
    if str(path_or_name) in SYNTHETIC_NAMES:
        _no_columns(columns, str(path_or_name))
        return generate()  # keeps the planted ground truth
    return clean_dataset(read_raw_dataset(path_or_name, columns), max_bad_fraction=max_bad_fraction)
