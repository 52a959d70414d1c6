"""Append-only item vocabulary: external item id -> dense index 1..N (0 is ``PAD_ITEM_ID``).

Built sorted by external id (numerically when every id is an integer, so S3-Rec ids keep their
numbers), then only ever extended: new ids are appended, existing ones are never renumbered, so
an index means the same item to every model version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirec.errors import DataFormatError
from mirec.schema import PAD_ITEM_ID

FORMAT = "mirec.vocabulary"
FORMAT_VERSION = 1
UNKNOWN_INDEX = -1
_INTEGER = re.compile(r"^[+-]?\d+$")


def sort_ids(ids: Iterable[Any]) -> list[str]:
    """Unique ids as str, sorted numerically when all are integers, else lexicographically.

    Numeric ties such as ``"1"`` / ``"01"`` are broken by the string.
    """
    unique = {str(i) for i in ids}
    if unique and all(_INTEGER.match(i) for i in unique):
        return sorted(unique, key=lambda i: (int(i), i))
    return sorted(unique)


def _fingerprint(ids: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for item_id in ids:
        raw = item_id.encode("utf-8", errors="surrogatepass")
        digest.update(f"{len(raw)}:".encode())
        digest.update(raw)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Vocabulary:
    """External item ids in index order: ``ids[k - 1]`` has dense index ``k``.

    Attributes:
        ids: external ids; index 0 (PAD) has no id.
    """

    ids: tuple[str, ...] = field(repr=False)
    _index: pd.Index = field(init=False, repr=False, compare=False)
    _fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = pd.Index(list(self.ids), dtype=object)
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise DataFormatError("<vocabulary>", None, f"duplicate item id {dup!r}")
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_fingerprint", _fingerprint(self.ids))

    def __repr__(self) -> str:
        return f"Vocabulary(size={self.size}, fingerprint={self.fingerprint!r})"

    @classmethod
    def build(cls, ids: Iterable[Any]) -> Vocabulary:
        """A vocabulary of the unique ``ids`` in sorted order (see ``sort_ids``)."""
        return cls(tuple(sort_ids(ids)))

    def extend(self, ids: Iterable[Any]) -> Vocabulary:
        """A new vocabulary with the unseen ``ids`` appended in sorted order (never renumbered)."""
        new = [i for i in sort_ids(ids) if i not in self._index]
        return self if not new else Vocabulary(self.ids + tuple(new))

    @property
    def size(self) -> int:
        """N, the number of real items (indices 1..N)."""
        return len(self.ids)

    @property
    def fingerprint(self) -> str:
        """sha256 over the ids in order, first 16 hex digits."""
        return self._fingerprint

    def encode(self, ids: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
        """External ids [M] -> int64 [M] indices in 1..N; unknown ids -> -1 (never raises)."""
        values = np.asarray(ids, dtype=object).ravel()
        if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            values = np.array([str(v) for v in values], dtype=object)
        found = self._index.get_indexer(values)
        return np.where(found >= 0, found + 1, UNKNOWN_INDEX).astype(np.int64)

    def decode(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Indices [M] -> object [M] external ids; PAD, -1 and out-of-range indices -> None."""
        values = np.asarray(idx, dtype=np.int64).ravel()
        table = np.empty(self.size + 1, dtype=object)
        table[PAD_ITEM_ID] = None
        table[1:] = self.ids
        ok = (values >= 1) & (values <= self.size)
        out = np.full(len(values), None, dtype=object)
        out[ok] = table[values[ok]]
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with format, size and fingerprint for integrity checks."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "size": self.size,
            "fingerprint": self.fingerprint,
            "ids": list(self.ids),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Vocabulary:
        """Rebuild from ``to_dict`` output.

        Raises:
            DataFormatError: wrong format or version, non-string ids, or a size or fingerprint
                that does not match the ids (a truncated or edited file).
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataFormatError(source, None, f"not a vocabulary: 'format' is not {FORMAT!r}")
        if data.get("version") != FORMAT_VERSION:
            raise DataFormatError(
                source, None, f"vocabulary version {data.get('version')!r} is not {FORMAT_VERSION}"
            )
        ids = data.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DataFormatError(source, None, "'ids' must be a list of strings")
        if data.get("size") != len(ids):
            raise DataFormatError(source, None, f"size {data.get('size')!r} but {len(ids)} ids")
        vocab = cls(tuple(ids))
        if data.get("fingerprint") != vocab.fingerprint:
            raise DataFormatError(
                source,
                None,
                f"fingerprint {data.get('fingerprint')!r} does "
                f"not match the ids ({vocab.fingerprint})",
            )
        return vocab

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=True), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a saved vocabulary.

        Raises:
            DataFormatError: unreadable, truncated or mismatched file (names file and line).
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataFormatError(str(path), None, f"cannot read vocabulary: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(str(path), exc.lineno, f"broken JSON: {exc.msg}") from exc
        return cls.from_dict(data, source=str(path))
