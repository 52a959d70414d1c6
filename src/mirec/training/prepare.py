"""Prepared inputs of a training run: vocabulary, split, item attributes, data fingerprint.

Two ways in: ``prepare`` derives the training sequences from the event log in memory (``mirec
train --data``); ``prepare_from_training_set`` takes them from the feature store's training set
(one row per training example: user, ``NUM_EVENTS`` = k earlier events, the history Feast
served, the target), checks that every row is the k-th prefix of one sequence and that the rows
are exactly the protocol's training examples, and keeps the protocol's validation and test users.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mirec.config import TrainConfig
from mirec.data.attributes import item_feature_matrix, user_profile_matrix
from mirec.data.events import Dataset
from mirec.data.splits import Split, TrainData, make_split
from mirec.data.vocab import Vocabulary, sort_ids
from mirec.errors import DataValidationError
from mirec.schema import (
    EVENT_TS,
    HIST_ITEM_IDS,
    ITEM_ID,
    NUM_EVENTS,
    SEQ_POS,
    TARGET_ITEM_IDS,
    USER_ID,
)

TRAINING_SET_COLUMNS = (USER_ID, NUM_EVENTS, HIST_ITEM_IDS, TARGET_ITEM_IDS)


@dataclass(frozen=True)
class Prepared:
    """Vocabulary, split and item attributes derived from a dataset for one config."""

    vocab: Vocabulary
    split: Split
    item_attributes: np.ndarray | None
    data_fingerprint: str
    user_profiles: np.ndarray | None = None  # hashed, rows of split.train (model.zero_shot)
    valid_profiles: np.ndarray | None = None  # hashed, rows of split.valid (model.zero_shot)


def data_fingerprint(events: pd.DataFrame) -> str:
    """A stable hash of the event log's content (ids, timestamps, positions)."""
    cols = [USER_ID, ITEM_ID, EVENT_TS, SEQ_POS]
    hashed = pd.util.hash_pandas_object(events[cols].reset_index(drop=True), index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:16]


def prepare(cfg: TrainConfig, dataset: Dataset, vocab: Vocabulary | None = None) -> Prepared:
    """Extend (or build) the vocabulary and make the split for ``cfg.data.protocol``."""
    ids = pd.concat([dataset.events[ITEM_ID], dataset.items[ITEM_ID]]).astype(str).unique()
    vocab = Vocabulary.build(ids) if vocab is None else vocab.extend(ids)
    split = make_split(dataset, vocab, cfg.data)
    content = cfg.model.content if cfg.model.item_tower == "content" else None
    attrs = item_feature_matrix(dataset.items, vocab, cfg.model.use_attributes, content)
    profiles = valid_profiles = None
    if cfg.model.zero_shot.enabled:
        zs = cfg.model.zero_shot
        profiles = user_profile_matrix(dataset.users, split.train.user_ids, zs)
        valid_profiles = user_profile_matrix(dataset.users, split.valid.user_ids, zs)
    fingerprint = data_fingerprint(dataset.events)
    return Prepared(vocab, split, attrs, fingerprint, profiles, valid_profiles)


def _flat(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [S] concatenated list values, int64 [R] list lengths) of a list column."""
    lengths = column.map(len).to_numpy(np.int64)
    if not len(column):
        return np.zeros(0, np.int64), lengths
    return np.concatenate([np.asarray(v, np.int64) for v in column]), lengths


def _fail_at(frame: pd.DataFrame, bad: np.ndarray, problem: str) -> None:
    """Raise naming the first offending row (user, k) when ``bad`` [R] has a True."""
    if bad.any():
        row = frame.iloc[int(np.flatnonzero(bad)[0])]
        raise DataValidationError(
            f"training set: {int(bad.sum())} rows {problem}; first: user {row[USER_ID]!r}, "
            f"{NUM_EVENTS}={int(row[NUM_EVENTS])}"
        )


def training_sequences(frame: pd.DataFrame, max_len: int) -> TrainData:
    """Rebuild the training sequences from a training set, checking every row.

    A user's rows must be k = 1..m (``NUM_EVENTS``), each with one target and the history
    ``seq[:k][-max_len:]`` of the sequence ``seq = [history of row 1] + targets``: the model's
    examples are then exactly the rows.

    Args:
        frame: [R] ``USER_ID``, ``NUM_EVENTS``, ``HIST_ITEM_IDS``, ``TARGET_ITEM_IDS``.
        max_len: the history window the rows were built with.

    Returns:
        Users with at least one row (sorted as ``build_sequences`` sorts them), sequences of
        m + 1 items.

    Raises:
        DataValidationError: a missing column or a row that breaks the rules, named.
    """
    missing = [c for c in TRAINING_SET_COLUMNS if c not in frame.columns]
    if missing:
        raise DataValidationError(f"training set has no columns {missing}: {list(frame.columns)}")
    users = frame[USER_ID].astype(str).to_numpy(dtype=object)
    user_ids = np.asarray(sort_ids(pd.unique(users)), dtype=object)
    rank = pd.Index(user_ids).get_indexer(users)
    k = frame[NUM_EVENTS].to_numpy(np.int64)
    order = np.lexsort((k, rank))
    frame, rank, k = frame.iloc[order].reset_index(drop=True), rank[order], k[order]
    counts = np.bincount(rank, minlength=len(user_ids))
    first_row = np.cumsum(counts) - counts
    _fail_at(frame, k != np.arange(len(k)) - first_row[rank] + 1, "are not k = 1..m per user")
    targets, target_len = _flat(frame[TARGET_ITEM_IDS])
    _fail_at(frame, target_len != 1, "do not have exactly one target")
    hist, hist_len = _flat(frame[HIST_ITEM_IDS])
    _fail_at(frame, hist_len != np.minimum(k, max_len), f"have not min(k, {max_len}) items")
    # seq of user u = [first history item of its k=1 row] + its targets: m + 1 items
    starts = np.cumsum(counts + 1) - (counts + 1)
    flat = np.zeros(int((counts + 1).sum()), np.int64)
    flat[starts] = hist[(np.cumsum(hist_len) - hist_len)[first_row]]
    flat[starts[rank] + k] = targets
    lo = starts[rank] + k - hist_len  # row r's history is flat[lo : lo + len]
    expected = flat[np.repeat(lo - np.cumsum(hist_len) + hist_len, hist_len) + np.arange(len(hist))]
    wrong = np.bincount(np.repeat(np.arange(len(k)), hist_len), expected != hist, len(k)) > 0
    _fail_at(frame, wrong, "have a history that is not the prefix of their user's sequence")
    return TrainData(user_ids, np.split(flat, np.cumsum(counts + 1)[:-1]))


def _example_counts(train: TrainData) -> dict[str, int]:
    return {
        str(u): len(s) - 1
        for u, s in zip(train.user_ids, train.sequences, strict=True)
        if len(s) > 1
    }


def prepare_from_training_set(
    cfg: TrainConfig,
    dataset: Dataset,
    training_set: pd.DataFrame,
    vocab: Vocabulary | None = None,
) -> Prepared:
    """``prepare``, with the training sequences taken from the feature store's training set.

    Validation and test users come from the protocol's split of ``dataset``, and so does
    ``item_counts`` (the samplers' popularity: every item of the training sequences, including
    those of users whose sequence is too short to give an example).

    Raises:
        DataValidationError: a row breaks ``training_sequences``' rules, or the rows are not
            the protocol's training examples (a held-out target among them, or one missing):
            the message gives both counts and the first user that differs.
    """
    base = prepare(cfg, dataset, vocab)
    train = training_sequences(training_set, cfg.data.max_len)
    got, want = _example_counts(train), _example_counts(base.split.train)
    if got != want:
        user = next(u for u in sort_ids({*got, *want}) if got.get(u) != want.get(u))
        raise DataValidationError(
            f"training set has {sum(got.values())} examples, protocol {cfg.data.protocol} "
            f"has {sum(want.values())}; user {user!r}: {got.get(user, 0)} rows, "
            f"{want.get(user, 0)} training examples"
        )
    return dataclasses.replace(base, split=dataclasses.replace(base.split, train=train))


def num_examples(prep: Prepared) -> int:
    """Training examples (next-item targets) of a prepared split: all prefixes."""
    return int(sum(max(len(s) - 1, 0) for s in prep.split.train.sequences))
