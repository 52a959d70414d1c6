"""Loaders that turn public dataset formats into a Dataset of canonical events.

A file in the wrong FORMAT raises ``DataFormatError(path, line, problem)``. Bad ROWS in a
well-formed file are set aside in ``report.bad_rows`` with a reason (``mirec.data.quality``);
loading fails (``DataValidationError``) only when their share passes ``max_bad_fraction``.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mirec.data.events import (
    TS_DTYPE,
    Dataset,
    LoadReport,
    no_time_timestamps,
    to_utc_timestamps,
)
from mirec.data.formats import (
    parse_int_lines,
    read_atomic,
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
    SEQ_POS,
    USER_ATTRIBUTES,
    USER_ID,
)

logger = logging.getLogger(__name__)

TABLE_COLUMNS = (USER_ID, ITEM_ID, EVENT_TS, EVENT_TYPE, EVENT_ID, SEQ_POS)
SYNTHETIC_NAMES = ("demo", "synthetic")


# --- shared ------------------------------------------------------------------------------------
def _finish(
    name: str,
    source: Path | str,
    events: pd.DataFrame,
    source_lines: np.ndarray,
    max_bad_fraction: float,
    item_attrs: dict[str, list[str]] | None = None,
    user_attrs: dict[str, list[str]] | None = None,
    item_text: dict[str, str] | None = None,
) -> Dataset:
    """Quarantine bad rows, check the tolerance and assemble the Dataset.

    The item and user tables hold every id of the CLEAN events plus every id with attributes.
    """
    reasons = find_bad_rows(events, now=datetime.now(UTC), epoch=MIN_EVENT_TS)
    clean, bad = split_bad_rows(events, reasons, source_lines)
    report = LoadReport(str(source), len(events), len(clean), count_reasons(bad), bad)
    if len(bad):
        logger.warning("%s", summarize_report(report))
    check_bad_fraction(report, max_bad_fraction)
    items = _id_table(clean[ITEM_ID].to_numpy(), ITEM_ID, ITEM_ATTRIBUTES, item_attrs or {})
    if item_text:
        items[ITEM_TEXT] = [item_text.get(i, "") for i in items[ITEM_ID]]
    users = _id_table(clean[USER_ID].to_numpy(), USER_ID, USER_ATTRIBUTES, user_attrs or {})
    logger.info(
        "loaded %s: %d events, %d items, %d users", name, len(clean), len(items), len(users)
    )
    return Dataset(name=name, events=clean, items=items, users=users, report=report)


def _events_frame(users: np.ndarray, items: np.ndarray, ts: pd.Series) -> pd.DataFrame:
    """Canonical events from object id arrays [E] and timestamps [E]; SEQ_POS = 0..E-1."""
    frame = pd.DataFrame({USER_ID: users, ITEM_ID: items})
    frame[EVENT_TS] = ts.reset_index(drop=True).astype(TS_DTYPE)
    frame[EVENT_TYPE] = EVENT_INTERACTION
    frame[SEQ_POS] = np.arange(len(frame), dtype=np.int64)
    return frame


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


def load_s3rec(path: str | Path, *, max_bad_fraction: float = 0.01) -> Dataset:
    """Load S3-Rec style ``<Name>.txt`` (+ ``_time.txt``, ``_item2attributes.json``).

    Lines are ``user item item ...`` (time order). ``SEQ_POS`` is the global position of the
    item token in the file (line-major). With ``<Name>_time.txt`` (lines must line up: same
    user, same length) ``EVENT_TS`` is its unix (day) timestamps; without it ``EVENT_TS`` is
    ``NO_TIME_BASE + SEQ_POS`` seconds. Item attributes become tokens ``"a<id>"``.

    Args:
        path: the directory holding ``<Name>.txt`` or the ``.txt`` file itself.
        max_bad_fraction: fail when a larger share of events is bad.

    Raises:
        DataFormatError: a non-integer token, a misaligned time file or broken JSON.
        DataValidationError: too many bad rows.
    """
    seq_file, time_file, attr_file = _s3rec_paths(Path(path))
    users, items, lengths, lines = parse_int_lines(seq_file)
    event_users = np.repeat(users.astype(str).astype(object), lengths)
    event_items = items.astype(str).astype(object)
    if time_file is not None:
        ts = to_utc_timestamps(pd.Series(_s3rec_times(time_file, seq_file, users, lengths, lines)))
    else:
        ts = no_time_timestamps(np.arange(len(event_items)))
    events = _events_frame(event_users, event_items, ts)
    attrs = s3rec_attributes(attr_file) if attr_file is not None else {}
    source_lines = np.repeat(lines, lengths)
    return _finish(seq_file.stem, seq_file, events, source_lines, max_bad_fraction, attrs)


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


def load_recbole(path: str | Path, *, max_bad_fraction: float = 0.01) -> Dataset:
    """Load RecBole atomic files ``<name>.inter`` (+ ``.user``, ``.item``).

    The ``.inter`` header is ``name:type`` fields; ``user_id`` and ``item_id`` are required and
    ``timestamp`` (unix seconds) is optional (without it ``NO_TIME_BASE + SEQ_POS`` seconds).
    ``SEQ_POS`` is the row number in the .inter file, so rows with the same timestamp (ml-100k
    has many: users rated in batches) keep their file order. Every non-id ``.user`` column becomes
    ``"col=value"`` tokens; ``.item`` columns become ``"col=value"`` tokens too (one per value of a
    ``token_seq`` such as genres), except title/text columns, kept as ``ITEM_TEXT``.

    Args:
        path: a directory holding one ``.inter``, the ``.inter`` file, or its path prefix.
        max_bad_fraction: fail when a larger share of events is bad.

    Raises:
        DataFormatError: missing header, missing id columns or a row with the wrong field count.
        DataValidationError: too many bad rows.
    """
    inter, user_file, item_file = _recbole_paths(Path(path))
    names, _, rows, lines = read_atomic(inter)
    for needed in ("user_id", "item_id"):
        if needed not in names:
            raise DataFormatError(str(inter), 1, f"header has no {needed} column: {names}")
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    col = dict(zip(names, columns, strict=True))
    users = np.asarray(col["user_id"], dtype=object)
    items = np.asarray(col["item_id"], dtype=object)
    if "timestamp" in col:
        ts = to_utc_timestamps(pd.Series(col["timestamp"], dtype=object))
    else:
        ts = no_time_timestamps(np.arange(len(rows)))
    events = _events_frame(users, items, ts)
    item_attrs: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    if item_file is not None:
        _, item_attrs, texts = recbole_attributes(item_file)
    user_attrs = recbole_attributes(user_file)[1] if user_file is not None else {}
    return _finish(
        inter.stem, inter, events, lines, max_bad_fraction, item_attrs, user_attrs, texts
    )


# --- generic CSV / parquet ------------------------------------------------------------------------
def _read_table_file(path: Path) -> tuple[pd.DataFrame, int]:
    """(raw frame, line number of its first row): CSV as strings, parquet as stored."""
    if path.is_dir() or path.suffix == ".parquet":
        try:
            return pq.read_table(str(path)).to_pandas(), 1
        except (OSError, pa.ArrowException) as exc:
            raise DataFormatError(str(path), None, f"cannot read parquet: {exc}") from exc
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_values=[""], encoding_errors="replace"
        )
    except pd.errors.EmptyDataError as exc:
        raise DataFormatError(str(path), 1, "empty file: expected a header row") from exc
    except pd.errors.ParserError as exc:
        found = re.search(r"line (\d+)", str(exc))
        line = int(found.group(1)) if found else None
        raise DataFormatError(str(path), line, f"malformed CSV: {exc}") from exc
    except OSError as exc:
        raise DataFormatError(str(path), None, f"cannot read file: {exc}") from exc
    return frame, 2


def load_table(
    path: str | Path, mapping: dict[str, str] | None = None, *, max_bad_fraction: float = 0.01
) -> Dataset:
    """Load events from a CSV file or parquet file / directory.

    Args:
        path: the file (``.csv`` with a header row, ``.parquet``) or a parquet directory.
        mapping: canonical column name -> source column (default: canonical names). ``USER_ID``
            and ``ITEM_ID`` are required; ``EVENT_TS`` (unix seconds or ISO 8601 strings,
            naive = UTC), ``EVENT_TYPE``, ``EVENT_ID`` and ``SEQ_POS`` are optional. Without
            ``SEQ_POS`` it is the row number; without ``EVENT_TS`` it is ``NO_TIME_BASE + SEQ_POS``
            seconds.
        max_bad_fraction: fail when a larger share of events is bad.

    Raises:
        ConfigError: the mapping names a column that is not canonical.
        DataFormatError: unreadable or malformed file, or a mapped column is missing.
        DataValidationError: too many bad rows.
    """
    path = Path(path)
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(TABLE_COLUMNS))
    if unknown:
        raise ConfigError(f"mapping has unknown canonical columns {unknown}; use {TABLE_COLUMNS}")
    raw, first_line = _read_table_file(path)
    source = {name: mapping.get(name, name) for name in TABLE_COLUMNS}
    for name in (USER_ID, ITEM_ID):
        if source[name] not in raw.columns:
            raise DataFormatError(
                str(path),
                1 if first_line == 2 else None,
                f"missing column {source[name]!r} (for {name}); found {list(raw.columns)}",
            )
    present = {name: raw[col] for name, col in source.items() if col in raw.columns}
    ids = {k: present[k].astype(object).where(present[k].notna(), None) for k in (USER_ID, ITEM_ID)}
    seq_pos = np.arange(len(raw), dtype=np.int64)
    if SEQ_POS in present:
        seq_pos = pd.to_numeric(present[SEQ_POS], errors="coerce").fillna(-1).to_numpy(np.int64)
    ts = (
        to_utc_timestamps(present[EVENT_TS]) if EVENT_TS in present else no_time_timestamps(seq_pos)
    )
    events = _events_frame(ids[USER_ID].to_numpy(), ids[ITEM_ID].to_numpy(), ts)
    events[SEQ_POS] = seq_pos
    if EVENT_TYPE in present:
        events[EVENT_TYPE] = present[EVENT_TYPE].to_numpy(dtype=object)
    if EVENT_ID in present:
        events[EVENT_ID] = present[EVENT_ID].astype(object).where(present[EVENT_ID].notna(), None)
        events[EVENT_ID] = events[EVENT_ID].map(lambda v: v if v is None else str(v))
    lines = np.arange(len(raw), dtype=np.int64) + first_line
    name = path.stem if path.suffix else path.name
    return _finish(name, path, events, lines, max_bad_fraction)


# --- dispatch ------------------------------------------------------------------------------------
def load_dataset(path_or_name: str | Path, *, max_bad_fraction: float = 0.01) -> Dataset:
    """Load a dataset, telling its format from the name or path.

    ``"demo"`` / ``"synthetic"`` -> ``synthetic.generate()``; a directory with a ``.inter`` file
    or a path prefix of one -> RecBole; a directory with ``<Name>.txt`` or a ``.txt`` file ->
    S3-Rec; ``.csv`` / ``.parquet`` files or a directory of parquet files -> table.

    Raises:
        DataFormatError: the path does not exist or its format cannot be told.
    """
    text = str(path_or_name)
    if text in SYNTHETIC_NAMES:
        return generate()
    path = Path(text)
    if path.is_dir():
        if any(path.glob("*.inter")):
            return load_recbole(path, max_bad_fraction=max_bad_fraction)
        if any(path.glob("*.txt")):
            return load_s3rec(path, max_bad_fraction=max_bad_fraction)
        if any(path.glob("*.parquet")):
            return load_table(path, max_bad_fraction=max_bad_fraction)
    elif path.is_file():
        if path.suffix == ".inter":
            return load_recbole(path, max_bad_fraction=max_bad_fraction)
        if path.suffix == ".txt":
            return load_s3rec(path, max_bad_fraction=max_bad_fraction)
        if path.suffix in (".csv", ".parquet"):
            return load_table(path, max_bad_fraction=max_bad_fraction)
    elif path.with_name(path.name + ".inter").is_file():
        return load_recbole(path, max_bad_fraction=max_bad_fraction)
    else:
        raise DataFormatError(text, None, f"no such file or directory (or use {SYNTHETIC_NAMES})")
    raise DataFormatError(
        text, None, "cannot tell the format: expected <Name>.txt, .inter, .csv or .parquet"
    )
