"""Sequences, protocol B (leave-one-out), protocol A (hashed user split) and the example frame."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from mirec.config import DataConfig
from mirec.data.events import Dataset, make_events
from mirec.data.splits import (
    UserSequences,
    build_sequences,
    make_split,
    split_leave_one_out,
    split_to_frame,
    split_users,
    user_bucket,
)
from mirec.data.vocab import Vocabulary
from mirec.schema import HIST_ITEM_IDS, SPLIT, TARGET_ITEM_IDS, USER_ID


def _seqs(rows: dict[str, list[int]]) -> UserSequences:
    users = list(rows)
    return UserSequences(
        user_ids=np.asarray(users, dtype=object),
        items=[np.asarray(rows[u], dtype=np.int64) for u in users],
        timestamps=[np.arange(len(rows[u]), dtype=np.int64) for u in users],
    )


def test_build_sequences_orders_by_time_then_seq_pos_and_skips_impressions() -> None:
    ev = make_events(
        ["10", "2", "2", "2", "2", "2"],
        ["a", "c", "b", "a", "d", "x"],
        [5, 9, 1, 1, 3, 0],
        seq_pos=[0, 1, 2, 3, 4, 5],
        event_type=["click", "interaction", "interaction", "interaction", "impression", "click"],
    )
    vocab = Vocabulary.build(["a", "b", "c", "d"])  # "x" is unknown: dropped
    seqs = build_sequences(ev, vocab)
    assert seqs.user_ids.tolist() == ["2", "10"]  # numeric user order
    assert [s.tolist() for s in seqs.items] == [[2, 1, 3], [1]]  # b(1,pos2) a(1,pos3) c(9)
    assert seqs.timestamps[0].tolist() == [1_000_000, 1_000_000, 9_000_000]  # microseconds
    empty = build_sequences(ev.iloc[:0], vocab)
    assert len(empty) == 0 and empty.items == []


def test_leave_one_out_by_hand() -> None:
    seqs = _seqs({"u1": [5, 6, 7, 8, 6], "u2": [1, 2], "u3": [4], "u4": [1, 2, 3]})
    split = split_leave_one_out(seqs, num_items=8, max_len=3)
    assert split.protocol == "B" and split.num_items == 8
    assert split.train.user_ids.tolist() == ["u1", "u2", "u3", "u4"]
    assert [s.tolist() for s in split.train.sequences] == [[5, 6, 7], [1, 2], [4], [1]]
    assert split.valid.user_ids.tolist() == ["u1", "u4"] == split.test.user_ids.tolist()
    assert [h.tolist() for h in split.valid.histories] == [[5, 6, 7], [1]]
    assert [t.tolist() for t in split.valid.targets] == [[8], [2]]
    assert [h.tolist() for h in split.test.histories] == [[5, 6, 7, 8], [1, 2]]
    assert [t.tolist() for t in split.test.targets] == [[6], [3]]
    # the repeated target 6 is never excluded, other history items are
    assert [e.tolist() for e in split.test.exclude] == [[5, 7, 8], [1, 2]]
    assert split.item_counts.tolist() == [0, 2, 1, 0, 1, 1, 1, 1, 0]


def test_leave_one_out_of_nothing() -> None:
    split = split_leave_one_out(_seqs({}), num_items=3, max_len=5)
    assert len(split.valid) == len(split.test) == 0 and split.item_counts.tolist() == [0] * 4
    assert split_to_frame(split).empty


def test_split_to_frame_by_hand() -> None:
    seqs = _seqs({"u1": [5, 6, 7, 8, 6], "u2": [1, 2]})
    frame = split_to_frame(split_leave_one_out(seqs, num_items=8, max_len=2))
    expected = pd.DataFrame(
        {
            USER_ID: ["u1", "u1", "u2", "u1", "u1"],
            SPLIT: ["train", "train", "train", "valid", "test"],
            HIST_ITEM_IDS: [[5], [5, 6], [1], [6, 7], [7, 8]],
            TARGET_ITEM_IDS: [[6], [7], [2], [8], [6]],
        }
    )
    pd.testing.assert_frame_equal(frame, expected)
    internal = split_to_frame(split_leave_one_out(seqs, 8, 2), user_ids_external=False)
    assert internal[USER_ID].tolist() == [0, 0, 1, 0, 0]


def test_user_bucket_is_the_documented_hash() -> None:
    digest = hashlib.sha1(b"1230:42").hexdigest()
    assert user_bucket("42", 1230) == int(digest[:8], 16) / 2**32


def test_protocol_a_is_deterministic_with_about_80_10_10_shares() -> None:
    rng = np.random.default_rng(0)
    seqs = _seqs({str(u): rng.integers(1, 50, size=10).tolist() for u in range(5000)})
    cfg = DataConfig(protocol="A", max_len=4)
    split = split_users(seqs, num_items=50, cfg=cfg)
    again = split_users(seqs, num_items=50, cfg=cfg)
    assert split.valid.user_ids.tolist() == again.valid.user_ids.tolist()
    shares = np.array([len(split.train.user_ids), len(split.valid), len(split.test)]) / 5000
    assert np.allclose(shares, [0.8, 0.1, 0.1], atol=0.02)
    assert all(
        len(h) == 8 and len(t) == 2
        for h, t in zip(split.test.histories, split.test.targets, strict=True)
    )
    other = split_users(seqs, 50, DataConfig(protocol="A", split_seed=7))
    assert other.test.user_ids.tolist() != split.test.user_ids.tolist()
    assert split.item_counts.sum() == 10 * len(split.train.user_ids)


def test_protocol_a_sends_users_without_history_or_targets_to_train() -> None:
    users = {str(u): [1] if u % 2 else [1, 2] for u in range(400)}  # 0.8*1 -> 0, 0.8*2 -> 1
    split = split_users(_seqs(users), 2, DataConfig(protocol="A"))
    assert all(len(users[u]) == 2 for u in split.test.user_ids)
    assert len(split.train.user_ids) + len(split.valid) + len(split.test) == 400
    assert {u for u, seq in users.items() if len(seq) == 1} <= set(split.train.user_ids)


def test_make_split_on_the_tiny_dataset(tiny_dataset: Dataset, tiny_vocab: Vocabulary) -> None:
    split_b = make_split(tiny_dataset, tiny_vocab, DataConfig(protocol="B", max_len=20))
    assert len(split_b.test) == 200 and split_b.num_items == 120
    total = sum(len(s) for s in split_b.train.sequences) + 2 * len(split_b.test)
    assert total == len(tiny_dataset.events)
    frame = split_to_frame(split_b)
    assert frame[HIST_ITEM_IDS].map(len).max() == 20
    split_a = make_split(tiny_dataset, tiny_vocab, DataConfig(protocol="A"))
    assert split_a.protocol == "A"
    with pytest.raises(ValueError):
        DataConfig(protocol="C")  # type: ignore[arg-type]
