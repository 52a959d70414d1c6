"""Cold-item and cold-user splits: what is withheld, what trains, what each row holds."""

from __future__ import annotations

import numpy as np
import pytest

from mirec.config import DataConfig
from mirec.data.cold_splits import (
    held_out_at_lengths,
    split_cold_items,
    split_cold_users,
    withheld,
)
from mirec.data.splits import UserSequences, split_users
from mirec.errors import ConfigError


def _seqs(items: list[list[int]]) -> UserSequences:
    arrays = [np.asarray(s, dtype=np.int64) for s in items]
    users = np.asarray([str(u + 1) for u in range(len(items))], dtype=object)
    return UserSequences(users, arrays, [np.arange(len(s)) for s in arrays])


def test_withheld_share_is_seeded_and_close_to_the_fraction() -> None:
    ids = [str(i) for i in range(5000)]
    first, again = withheld(ids, 0.1, 7), withheld(ids, 0.1, 7)
    assert np.array_equal(first, again)
    assert 0.08 < first.mean() < 0.12
    assert not np.array_equal(first, withheld(ids, 0.1, 8))
    with pytest.raises(ConfigError, match="fraction"):
        withheld(ids, 1.5, 7)


def test_cold_items_never_train_and_rows_split_by_target() -> None:
    item_ids = np.asarray([str(i) for i in range(1, 201)], dtype=object)
    cold = np.concatenate([[False], withheld(item_ids, 0.1, 3)])
    rng = np.random.default_rng(0)
    seqs = _seqs(
        [rng.choice(np.arange(1, 201), size=12, replace=False).tolist() for _ in range(300)]
    )
    out = split_cold_items(seqs, item_ids, max_len=50, fraction=0.1, seed=3)
    assert np.array_equal(out.cold_items, cold)
    flat = np.concatenate(out.split.train.sequences)
    assert not cold[flat].any()  # no withheld item in any training sequence
    assert out.split.item_counts[cold].sum() == 0
    for data, is_cold in ((out.test_cold, True), (out.test_warm, False)):
        assert all(bool(cold[t[0]]) == is_cold for t in data.targets)
        assert all(not cold[h].any() for h in data.histories)  # histories hold warm items
    assert len(out.test_cold) + len(out.test_warm) == 300
    assert len(out.test_cold) > 10
    seq, row = seqs.items[0], list(out.split.test.user_ids).index("1")
    assert out.split.test.targets[row].tolist() == [seq[-1]]
    assert out.split.test.histories[row].tolist() == [i for i in seq[:-1] if not cold[i]]
    assert out.split.train.sequences[0].tolist() == [i for i in seq[:-2] if not cold[i]]


def test_cold_users_are_held_out_and_cut_at_each_history_length() -> None:
    seqs = _seqs([list(range(1 + u % 5, 9 + u % 5)) for u in range(400)] + [[1, 2, 3]])
    out = split_cold_users(seqs, 20, max_len=50, fraction=0.1, seed=5)
    train, test = set(out.split.train.user_ids), set(out.test[0].user_ids)
    valid = set(out.valid[0].user_ids)
    assert not train & test and not train & valid and not test & valid
    assert "401" in train  # 3 events: too short to be a cold user at every length
    assert 20 < len(test) < 60 and 20 < len(valid) < 60
    for h in (0, 1, 3, 5):
        data = out.test[h]
        for user, hist, target in zip(data.user_ids, data.histories, data.targets, strict=True):
            seq = seqs.items[int(user) - 1]
            assert hist.tolist() == seq[:h].tolist() and target.tolist() == seq[h:].tolist()
    assert set(out.split.test.user_ids) == test  # protocol A cut of the same users


def test_protocol_a_held_out_users_are_cut_at_each_history_length() -> None:
    seqs = _seqs([list(range(1, 3 + u % 6)) for u in range(400)])  # 2..7 events
    split = split_users(seqs, 20, DataConfig(protocol="A"))
    out = held_out_at_lengths(split.valid, (0, 1, 3))
    whole = {u: seqs.items[int(u) - 1] for u in split.valid.user_ids}
    kept = [u for u in split.valid.user_ids if len(whole[u]) > 3]
    assert 0 < len(kept) < len(split.valid)  # users with <= 3 events are left out
    for h in (0, 1, 3):
        data = out[h]
        assert list(data.user_ids) == kept  # the same users in the same order at every h
        for user, hist, target in zip(data.user_ids, data.histories, data.targets, strict=True):
            assert hist.tolist() == whole[user][:h].tolist()
            assert target.tolist() == whole[user][h:].tolist()
