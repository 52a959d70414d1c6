"""Parsers of the public text formats (S3-Rec lines, RecBole atomic files, attribute JSON).

They turn text into arrays and dicts and raise ``DataFormatError(path, line, problem)`` on a
file in the wrong format; row-level quality is left to ``mirec.data.quality``.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirec.errors import DataFormatError

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
TEXT_COLUMN_HINTS = ("title", "text", "description")  # token_seq columns kept as item text


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file; undecodable bytes become U+FFFD (flagged per row later)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise DataFormatError(str(path), None, f"cannot read file: {exc}") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def parse_int_lines(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse lines of whitespace-separated integers ``key v1 v2 ...``.

    Returns:
        (keys int64 [L], values int64 [V] concatenated, lengths int64 [L], line numbers [L]);
        blank lines are skipped.
    """
    tokens: list[str] = []
    keys_at: list[int] = []
    numbers: list[int] = []
    for number, line in enumerate(read_lines(path), start=1):
        parts = line.split()
        if parts:
            keys_at.append(len(tokens))
            tokens.extend(parts)
            numbers.append(number)
    try:
        values = np.array(tokens, dtype=str).astype(np.int64) if tokens else np.zeros(0, np.int64)
    except (ValueError, OverflowError) as exc:
        raise _first_non_integer(path) from exc
    starts = np.asarray(keys_at, dtype=np.int64)
    ends = np.append(starts[1:], len(tokens)).astype(np.int64)
    is_key = np.zeros(len(tokens), dtype=bool)
    is_key[starts] = True
    return values[starts], values[~is_key], ends - starts - 1, np.asarray(numbers, np.int64)


def _first_non_integer(path: Path) -> DataFormatError:
    """The error naming the first token that is not an int64 (slow path, after a failure)."""
    for number, line in enumerate(read_lines(path), start=1):
        for token in line.split():
            try:
                ok = (
                    re.fullmatch(r"[+-]?[0-9]+", token) is not None
                    and -(2**63) <= int(token) < 2**63
                )
            except ValueError:
                ok = False
            if not ok:
                return DataFormatError(str(path), number, f"token {token!r} is not an integer")
    return DataFormatError(str(path), None, "cannot parse the integers")


def s3rec_attributes(path: Path) -> dict[str, list[str]]:
    """``{"item": [attr, ...]}`` JSON -> item id -> ``["a<attr>", ...]``."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(str(path), exc.lineno, f"broken JSON: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise DataFormatError(str(path), None, "expected a JSON object {item_id: [attr_id, ...]}")
    out: dict[str, list[str]] = {}
    for key, attrs in raw.items():
        ok = isinstance(attrs, list) and all(type(a) is int for a in attrs)
        if not ok or not re.fullmatch(r"[+-]?\d+", key):
            raise DataFormatError(
                str(path),
                None,
                f"item {key!r}: expected an integer id with a list of integer "
                f"attribute ids, got {str(attrs)[:60]}",
            )
        out[str(int(key))] = [f"a{a}" for a in attrs]
    return out


@dataclass(frozen=True)
class Rows:
    """Rows of a delimited text file: the well-formed ones and the lines that are not.

    Attributes:
        header: the column names.
        rows: [R] rows, each with ``len(header)`` string fields.
        lines: int64 [R] 1-based line of each row.
        malformed: (1-based line, fields found) of every line with another number of fields.
    """

    header: list[str]
    rows: list[list[str]]
    lines: np.ndarray
    malformed: list[tuple[int, list[str]]]


def read_csv_rows(path: Path) -> Rows:
    """Read a CSV file with a header row; lines with the wrong field count are set apart.

    Undecodable bytes become U+FFFD; blank lines are skipped.

    Raises:
        DataFormatError: unreadable or empty file, or a header with an empty or repeated name.
    """
    records = csv.reader(read_lines(path))
    header = next(records, None)
    if not header:
        raise DataFormatError(str(path), 1, "empty file: expected a header row")
    header = [name.strip() for name in header]
    if "" in header or len(set(header)) != len(header):
        raise DataFormatError(str(path), 1, f"header needs distinct non-empty names: {header}")
    rows: list[list[str]] = []
    numbers: list[int] = []
    malformed: list[tuple[int, list[str]]] = []
    try:
        for fields in records:
            if not fields:
                continue
            if len(fields) == len(header):
                rows.append(fields)
                numbers.append(records.line_num)
            else:
                malformed.append((records.line_num, fields))
    except csv.Error as exc:
        raise DataFormatError(str(path), records.line_num, f"malformed CSV: {exc}") from exc
    return Rows(header, rows, np.asarray(numbers, dtype=np.int64), malformed)


def read_atomic_rows(path: Path) -> tuple[list[str], Rows]:
    """Read a RecBole atomic file, setting apart the lines with the wrong field count.

    Returns:
        (column types, rows with the column names as header).

    Raises:
        DataFormatError: an empty file or a header that is not ``name:type`` fields.
    """
    lines = read_lines(path)
    names, types = _atomic_header(path, lines)
    rows: list[list[str]] = []
    numbers: list[int] = []
    malformed: list[tuple[int, list[str]]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) == len(names):
            rows.append(fields)
            numbers.append(number)
        else:
            malformed.append((number, fields))
    return types, Rows(names, rows, np.asarray(numbers, dtype=np.int64), malformed)


def _atomic_header(path: Path, lines: list[str]) -> tuple[list[str], list[str]]:
    if not lines:
        raise DataFormatError(str(path), 1, "empty file: expected a header of name:type fields")
    names: list[str] = []
    types: list[str] = []
    for field in lines[0].split("\t"):
        name, _, kind = field.rpartition(":")
        if not name or kind not in ATOMIC_TYPES:
            raise DataFormatError(
                str(path),
                1,
                f"missing header: field {field!r} is not name:type with a type in "
                f"{list(ATOMIC_TYPES)}",
            )
        names.append(name)
        types.append(kind)
    return names, types


def read_atomic(path: Path) -> tuple[list[str], list[str], list[list[str]], np.ndarray]:
    """Read a RecBole atomic file: header ``name:type`` fields, then tab-separated rows.

    Returns:
        (column names, column types, rows as lists of strings, 1-based line number per row).

    Raises:
        DataFormatError: a bad header or a row with the wrong number of fields.
    """
    types, found = read_atomic_rows(path)
    if found.malformed:
        number, fields = found.malformed[0]
        raise DataFormatError(
            str(path),
            number,
            f"expected {len(found.header)} tab-separated fields, found {len(fields)}",
        )
    return found.header, types, found.rows, found.lines


def recbole_attributes(path: Path) -> tuple[str, dict[str, list[str]], dict[str, str]]:
    """(id column, id -> ``"col=value"`` tokens, id -> text) from a .user or .item file."""
    names, types, rows, _ = read_atomic(path)
    id_col = next((n for n in names if n in ("user_id", "item_id")), names[0])
    key = names.index(id_col)
    attrs: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    for row in rows:
        tokens: list[str] = []
        text: list[str] = []
        for col, (name, kind) in enumerate(zip(names, types, strict=True)):
            value = row[col].strip()
            if col == key or not value:
                continue
            if kind.endswith("_seq") and any(h in name for h in TEXT_COLUMN_HINTS):
                text.append(value)
            elif kind.endswith("_seq"):
                tokens.extend(f"{name}={v}" for v in value.split())
            else:
                tokens.append(f"{name}={value}")
        attrs.setdefault(row[key], tokens)
        if text:
            texts.setdefault(row[key], " ".join(text))
    return id_col, attrs, texts
