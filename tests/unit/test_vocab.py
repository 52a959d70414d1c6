"""Vocabulary: order, append-only extension, unknown ids, fingerprint and file integrity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mirec.data.vocab import Vocabulary, sort_ids
from mirec.errors import DataFormatError


def test_integer_ids_sort_numerically_and_keep_their_numbers() -> None:
    vocab = Vocabulary.build(["10", "2", "1", "2", "3"])
    assert vocab.ids == ("1", "2", "3", "10") and vocab.size == 4
    assert vocab.encode(["1", "2", "10"]).tolist() == [1, 2, 4]
    assert sort_ids(["b", "a", "10", "9"]) == ["10", "9", "a", "b"]  # not all integers


def test_extend_appends_new_ids_and_never_renumbers() -> None:
    old = Vocabulary.build(["b", "d"])
    new = old.extend(["c", "a", "d", "e"])
    assert new.ids == ("b", "d", "a", "c", "e")
    assert new.encode(["b", "d"]).tolist() == old.encode(["b", "d"]).tolist() == [1, 2]
    assert old.extend(["b"]) is old and old.ids == ("b", "d")  # frozen: old unchanged


def test_unknown_ids_encode_to_minus_one_and_decode_handles_pad() -> None:
    vocab = Vocabulary.build(["x", "y"])
    assert vocab.encode(np.array(["y", "zzz", "x"])).tolist() == [2, -1, 1]
    assert vocab.encode([]).dtype == np.int64
    assert Vocabulary.build([1, 2]).encode([2, 3]).tolist() == [2, -1]  # non-str ids are str()
    assert vocab.decode([1, 2, 0, -1, 9]).tolist() == ["x", "y", None, None, None]


def test_fingerprint_depends_on_ids_and_order() -> None:
    a, b = Vocabulary.build(["a", "b"]), Vocabulary.build(["b", "a"])
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    assert Vocabulary(("b", "a")).fingerprint != a.fingerprint
    assert a.extend(["c"]).fingerprint != a.fingerprint
    assert Vocabulary(("ab", "c")).fingerprint != Vocabulary(("a", "bc")).fingerprint


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary.build(["é", "b", "1x"])
    vocab.save(tmp_path / "v" / "vocab.json")
    assert Vocabulary.load(tmp_path / "v" / "vocab.json") == vocab
    assert Vocabulary.from_dict(vocab.to_dict()).fingerprint == vocab.fingerprint


def test_truncated_or_mismatched_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    Vocabulary.build([str(i) for i in range(100)]).save(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(DataFormatError, match="broken JSON"):
        Vocabulary.load(path)
    data = json.loads(text)
    data["ids"] = data["ids"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match="size 100 but 99 ids"):
        Vocabulary.load(path)
    data["size"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match="fingerprint"):
        Vocabulary.load(path)
    with pytest.raises(DataFormatError, match="not a vocabulary"):
        Vocabulary.from_dict({"ids": []})
    with pytest.raises(DataFormatError, match="duplicate"):
        Vocabulary(("a", "a"))
