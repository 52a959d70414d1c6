"""Training and evaluation batches: padding, trimming, pos_targets alignment, coverage, order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirec.data.batches import SeqBatch, eval_batches, num_train_rows, train_batches
from mirec.data.splits import EvalData, Split, TrainData, split_to_frame
from mirec.errors import ConfigError
from mirec.schema import HIST_ITEM_IDS, SPLIT, TARGET_ITEM_IDS

PAD = 0


def _train(*seqs: list[int]) -> TrainData:
    return TrainData(
        user_ids=np.array([f"u{i}" for i in range(len(seqs))], dtype=object),
        sequences=[np.asarray(s, dtype=np.int64) for s in seqs],
    )


def _rows(batches: list[SeqBatch]) -> list[tuple[list[int], int]]:
    """(unpadded history, target) of every row."""
    out = []
    for b in batches:
        for row in range(len(b.hist_len)):
            n = int(b.hist_len[row])
            hist = b.hist_item_ids[row, b.hist_item_ids.shape[1] - n :].tolist()
            out.append((hist, int(b.target_item_ids[row])))
    return out


def test_sequence_mode_aligns_pos_targets_and_left_pads() -> None:
    train = _train([1, 2, 3, 4, 5], [6, 7], [8])  # the one-item user gives no row
    batches = list(train_batches(train, 8, 3, mode="sequence", generator=np.random.default_rng(0)))
    assert len(batches) == 1 and num_train_rows(train, "sequence") == 2
    b = batches[0]
    order = b.user_idx.tolist()
    by_user = {u: r for r, u in enumerate(order)}
    assert sorted(order) == [0, 1]
    r0, r1 = by_user[0], by_user[1]
    assert b.hist_item_ids.shape == (2, 3)  # trimmed to the longest row, <= max_len
    assert b.hist_item_ids[r0].tolist() == [2, 3, 4]  # seq[:-1][-3:]
    assert b.pos_targets is not None and b.pos_targets[r0].tolist() == [3, 4, 5]  # seq[1:][-3:]
    assert b.hist_item_ids[r1].tolist() == [PAD, PAD, 6]
    assert b.pos_targets[r1].tolist() == [PAD, PAD, 7]  # type: ignore[union-attr]
    assert b.target_item_ids[[r0, r1]].tolist() == [5, 7]
    assert b.hist_len[[r0, r1]].tolist() == [3, 1]
    assert b.mask[r1].tolist() == [False, False, True]


def test_prefix_mode_yields_exactly_the_split_to_frame_train_rows() -> None:
    seqs = [[1, 2, 3, 4, 5], [6, 7], [8], [9, 1, 9]]
    train = _train(*seqs)
    split = Split(
        "B",
        2,
        9,
        train,
        EvalData(np.array([], object), [], [], []),
        EvalData(np.array([], object), [], [], []),
        np.zeros(10, np.int64),
    )
    frame = split_to_frame(split)
    expected = sorted(
        zip(frame[HIST_ITEM_IDS], (t[0] for t in frame[TARGET_ITEM_IDS]), strict=True)
    )
    batches = list(train_batches(train, 3, 2, mode="prefix", generator=torch.Generator()))
    assert sorted(_rows(batches)) == expected
    assert len(expected) == num_train_rows(train, "prefix") == 7
    assert all(b.pos_targets is None for b in batches)
    assert (frame[SPLIT] == "train").all()


def test_batches_are_deterministic_and_bucketed_by_length() -> None:
    rng = np.random.default_rng(1)
    train = _train(*[rng.integers(1, 100, size=rng.integers(2, 60)).tolist() for _ in range(400)])

    def epoch(seed: int, bucket: bool = True) -> list[SeqBatch]:
        gen = torch.Generator().manual_seed(seed)
        return list(
            train_batches(train, 16, 50, mode="prefix", generator=gen, bucket_by_length=bucket)
        )

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(x.hist_item_ids, y.hist_item_ids) for x, y in zip(a, b, strict=True))
    assert [x.user_idx.tolist() for x in a] != [x.user_idx.tolist() for x in c]
    for batch in a:  # every batch trimmed to its own longest row
        assert batch.hist_item_ids.shape[1] == int(batch.hist_len.max()) <= 50
    mean_width = np.mean([x.hist_item_ids.shape[1] for x in a])
    mean_unbucketed = np.mean([x.hist_item_ids.shape[1] for x in epoch(0, bucket=False)])
    assert mean_width < 0.8 * mean_unbucketed
    assert sum(len(x.hist_len) for x in a) == num_train_rows(train, "prefix")


def test_empty_training_data_and_bad_arguments() -> None:
    gen = np.random.default_rng(0)
    assert list(train_batches(_train(), 4, 5, mode="sequence", generator=gen)) == []
    assert list(train_batches(_train([3]), 4, 5, mode="prefix", generator=gen)) == []
    with pytest.raises(ConfigError):
        list(train_batches(_train([1, 2]), 4, 5, mode="causal", generator=gen))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        num_train_rows(_train([1, 2]), "causal")  # type: ignore[arg-type]


def test_eval_batches_cover_every_row_once_sorted_by_length() -> None:
    histories = [np.arange(1, n + 1) for n in (5, 0, 3, 9, 1)]
    data = EvalData(
        user_ids=np.array(list("abcde"), dtype=object),
        histories=histories,
        targets=[np.array([t, t + 1]) for t in (11, 12, 13, 14, 15)],
        exclude=[np.zeros(0, np.int64)] * 5,
    )
    out = list(eval_batches(data, 2, 4))
    rows = np.concatenate([r for _, r in out])
    assert sorted(rows.tolist()) == [0, 1, 2, 3, 4]
    assert [min(len(histories[r]), 4) for r in rows] == sorted(min(len(h), 4) for h in histories)
    for batch, r in out:
        assert batch.user_idx is not None and batch.user_idx.tolist() == r.tolist()
        assert batch.target_item_ids.tolist() == [11 + i for i in r]  # first target
        for row, i in enumerate(r):
            kept = histories[i][-4:].tolist()
            width = batch.hist_item_ids.shape[1]
            assert batch.hist_item_ids[row].tolist() == [PAD] * (width - len(kept)) + kept
