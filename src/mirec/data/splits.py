"""Per-user sequences and the two evaluation protocols (A: user split, B: leave-one-out).

Protocol B (ICLRec / ELCRec / S3-Rec, leave-one-out by position): test target = last item,
valid target = second-to-last, training = everything before, where every prefix predicts its
next item. Protocol A (ComiRec / REMI): users are split by a seeded hash of their id; valid and
test users give their first ``history_fraction`` of events as history and the rest as targets.
See docs/protocols.md for the exact rules (the Spark job reproduces ``split_to_frame``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mirec.config import DataConfig
from mirec.data.events import Dataset, event_timestamps_us
from mirec.data.vocab import Vocabulary, sort_ids
from mirec.errors import ConfigError, DataValidationError
from mirec.schema import (
    BEHAVIOUR_EVENT_TYPES,
    EVENT_TYPE,
    HIST_ITEM_IDS,
    ITEM_ID,
    SEQ_POS,
    SPLIT,
    TARGET_ITEM_IDS,
    USER_ID,
)

logger = logging.getLogger(__name__)

TRAIN, VALID, TEST = "train", "valid", "test"
EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class UserSequences:
    """Every user's behaviour sequence in (``EVENT_TS``, ``SEQ_POS``) order.

    Attributes:
        user_ids: object [U] external user ids, sorted (numerically when all are integers).
        items: U int64 arrays of vocabulary indices.
        timestamps: U int64 arrays of event times in microseconds since the unix epoch.
    """

    user_ids: np.ndarray
    items: list[np.ndarray]
    timestamps: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass(frozen=True)
class TrainData:
    """Training users and their training sequences ("all prefixes": seq[:k] -> seq[k], k >= 1).

    Attributes:
        user_ids: object [U_train] external user ids.
        sequences: U_train int64 arrays of item indices.
    """

    user_ids: np.ndarray
    sequences: list[np.ndarray]


@dataclass(frozen=True)
class EvalData:
    """Evaluation rows, one per user.

    Attributes:
        user_ids: object [U_eval] external user ids.
        histories: FULL histories (int64 arrays; batching truncates to ``max_len``).
        targets: int64 arrays of target items (exactly one under protocol B).
        exclude: sorted unique history items that are not targets: what a ranking that removes
            seen items removes (protocol B reference code does; ComiRec's protocol A does not).
    """

    user_ids: np.ndarray
    histories: list[np.ndarray]
    targets: list[np.ndarray]
    exclude: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass(frozen=True)
class Split:
    """Train / valid / test data of one protocol.

    Attributes:
        protocol: ``"A"`` (user split) or ``"B"`` (leave-one-out).
        max_len: the history window (most recent items).
        num_items: N; item indices are 1..N.
        train, valid, test: the three parts.
        item_counts: int64 [N+1] item occurrences in the TRAINING sequences (index 0 = PAD = 0).
    """

    protocol: str
    max_len: int
    num_items: int
    train: TrainData
    valid: EvalData
    test: EvalData
    item_counts: np.ndarray


def build_sequences(events: pd.DataFrame, vocab: Vocabulary) -> UserSequences:
    """Group behaviour events into per-user sequences of vocabulary indices.

    Only ``BEHAVIOUR_EVENT_TYPES`` count (impressions do not); items unknown to ``vocab`` are
    dropped with a warning. Users are sorted by external id (see ``vocab.sort_ids``), events by
    (``EVENT_TS``, ``SEQ_POS``).

    Args:
        events: [E] canonical events.
        vocab: the item vocabulary.
    """
    if EVENT_TYPE in events.columns:
        events = events.loc[events[EVENT_TYPE].isin(list(BEHAVIOUR_EVENT_TYPES))]
    items = vocab.encode(events[ITEM_ID].to_numpy(dtype=object))
    known = items >= 1
    if not known.all():
        logger.warning("dropping %d events whose item is not in the vocabulary", (~known).sum())
        events, items = events.loc[known], items[known]
    if events.empty:
        return UserSequences(np.zeros(0, dtype=object), [], [])
    users = events[USER_ID].astype(str).to_numpy(dtype=object)
    user_ids = np.asarray(sort_ids(pd.unique(users)), dtype=object)
    rank = pd.Index(user_ids).get_indexer(users)
    ts = event_timestamps_us(events)
    order = np.lexsort((events[SEQ_POS].to_numpy(np.int64), ts, rank))
    bounds = np.cumsum(np.bincount(rank, minlength=len(user_ids)))[:-1]
    return UserSequences(
        user_ids=user_ids,
        items=np.split(items[order], bounds),
        timestamps=np.split(ts[order], bounds),
    )


def _eval_data(
    user_ids: list[str], histories: list[np.ndarray], targets: list[np.ndarray]
) -> EvalData:
    return EvalData(
        user_ids=np.asarray(user_ids, dtype=object),
        histories=histories,
        targets=targets,
        exclude=_exclusions(histories, targets),
    )


def _exclusions(histories: list[np.ndarray], targets: list[np.ndarray]) -> list[np.ndarray]:
    """Per row: sorted unique history items that are not among its targets (vectorised)."""
    if not histories:
        return []
    rows = np.arange(len(histories), dtype=np.int64)
    hist_len = np.fromiter((len(h) for h in histories), np.int64, len(histories))
    target_len = np.fromiter((len(t) for t in targets), np.int64, len(targets))
    flat_h = np.concatenate(histories).astype(np.int64)
    flat_t = np.concatenate(targets).astype(np.int64)
    width = int(max(flat_h.max(initial=0), flat_t.max(initial=0))) + 1
    keys = np.unique(np.repeat(rows, hist_len) * width + flat_h)  # sorted by (row, item)
    keys = keys[~np.isin(keys, np.repeat(rows, target_len) * width + flat_t)]
    counts = np.bincount(keys // width, minlength=len(histories))
    return np.split(keys % width, np.cumsum(counts)[:-1])


def _item_counts(sequences: list[np.ndarray], num_items: int) -> np.ndarray:
    flat = np.concatenate(sequences) if sequences else EMPTY
    if len(flat) and (flat.min() < 1 or flat.max() > num_items):
        raise DataValidationError(
            f"item indices must be in 1..{num_items}, found {flat.min()}..{flat.max()}"
        )
    return np.bincount(flat, minlength=num_items + 1).astype(np.int64)


def split_leave_one_out(seqs: UserSequences, num_items: int, max_len: int) -> Split:
    """Protocol B: test = last item, valid = second-to-last, train = the rest.

    Users with fewer than 3 events are training-only (no valid / test row); a one-event user
    gives no training example.

    Args:
        seqs: per-user sequences.
        num_items: N.
        max_len: history window recorded in the split.
    """
    train: list[np.ndarray] = []
    parts: dict[str, tuple[list[str], list[np.ndarray], list[np.ndarray]]] = {
        VALID: ([], [], []),
        TEST: ([], [], []),
    }
    for user, seq in zip(seqs.user_ids, seqs.items, strict=True):
        if len(seq) < 3:
            train.append(seq)
            continue
        train.append(seq[:-2])
        for name, cut in ((VALID, len(seq) - 2), (TEST, len(seq) - 1)):
            users, histories, targets = parts[name]
            users.append(user)
            histories.append(seq[:cut])
            targets.append(seq[cut : cut + 1])
    return Split(
        protocol="B",
        max_len=max_len,
        num_items=num_items,
        train=TrainData(np.asarray(seqs.user_ids, dtype=object), train),
        valid=_eval_data(*parts[VALID]),
        test=_eval_data(*parts[TEST]),
        item_counts=_item_counts(train, num_items),
    )


def user_bucket(user_id: str, seed: int) -> float:
    """Seeded hash of a user id in [0, 1): ``int(sha1(f"{seed}:{user_id}")[:8], 16) / 2**32``.

    In Spark: ``conv(substring(sha1(concat(seed, ':', user_id)), 1, 8), 16, 10) / pow(2, 32)``.
    """
    digest = hashlib.sha1(f"{seed}:{user_id}".encode("utf-8", errors="surrogatepass"))
    return int(digest.hexdigest()[:8], 16) / 2**32


def assign_user_split(user_id: str, cfg: DataConfig) -> str:
    """Protocol A part of a user by hash bucket: train, valid or test (before length checks)."""
    bucket = user_bucket(user_id, cfg.split_seed)
    if bucket < 1 - cfg.valid_fraction - cfg.test_fraction:
        return TRAIN
    return VALID if bucket < 1 - cfg.test_fraction else TEST


def split_users(seqs: UserSequences, num_items: int, cfg: DataConfig) -> Split:
    """Protocol A: split USERS by a seeded hash; valid / test users split their sequence in time.

    A valid / test user's history is the first ``floor(history_fraction * len)`` events (IEEE
    double arithmetic) and the targets are the rest; a user whose history or targets would be
    empty goes to train. Training users contribute their whole sequence (all prefixes).

    Args:
        seqs: per-user sequences.
        num_items: N.
        cfg: ``split_seed``, ``valid_fraction``, ``test_fraction``, ``history_fraction``,
            ``max_len``.
    """
    train_users: list[str] = []
    train: list[np.ndarray] = []
    parts: dict[str, tuple[list[str], list[np.ndarray], list[np.ndarray]]] = {
        VALID: ([], [], []),
        TEST: ([], [], []),
    }
    for user, seq in zip(seqs.user_ids, seqs.items, strict=True):
        part = assign_user_split(user, cfg)
        cut = math.floor(cfg.history_fraction * len(seq))
        if part == TRAIN or cut == 0 or cut == len(seq):
            train_users.append(user)
            train.append(seq)
            continue
        users, histories, targets = parts[part]
        users.append(user)
        histories.append(seq[:cut])
        targets.append(seq[cut:])
    return Split(
        protocol="A",
        max_len=cfg.max_len,
        num_items=num_items,
        train=TrainData(np.asarray(train_users, dtype=object), train),
        valid=_eval_data(*parts[VALID]),
        test=_eval_data(*parts[TEST]),
        item_counts=_item_counts(train, num_items),
    )


def make_split(dataset: Dataset, vocab: Vocabulary, cfg: DataConfig) -> Split:
    """Sequences of ``dataset`` under ``cfg.protocol`` (``"A"`` or ``"B"``)."""
    seqs = build_sequences(dataset.events, vocab)
    if cfg.protocol == "B":
        return split_leave_one_out(seqs, vocab.size, cfg.max_len)
    if cfg.protocol == "A":
        return split_users(seqs, vocab.size, cfg)
    raise ConfigError(f"data.protocol must be 'A' or 'B', got {cfg.protocol!r}")


def split_to_frame(split: Split, user_ids_external: bool = True) -> pd.DataFrame:
    """The canonical training-example frame, one row per example.

    Columns: ``USER_ID``, ``SPLIT``, ``HIST_ITEM_IDS`` (list[int]: the last ``max_len`` items
    before the target, oldest first, unpadded), ``TARGET_ITEM_IDS`` (list[int]). Train rows are
    every prefix k >= 1 of each training sequence (``seq[:k][-max_len:] -> [seq[k]]``), in user
    order then k; valid and test rows follow, one per user with all its targets.

    Args:
        split: the split.
        user_ids_external: True: external user ids; False: the user's 0-based position among
            all users of the split sorted by external id.
    """
    m = split.max_len
    users: list[str] = []
    parts: list[str] = []
    hists: list[list[int]] = []
    targets: list[list[int]] = []
    for user, seq in zip(split.train.user_ids, split.train.sequences, strict=True):
        for k in range(1, len(seq)):
            users.append(user)
            hists.append(seq[max(0, k - m) : k].tolist())
            targets.append([int(seq[k])])
    parts.extend([TRAIN] * len(users))
    for name, data in ((VALID, split.valid), (TEST, split.test)):
        for user, hist, target in zip(data.user_ids, data.histories, data.targets, strict=True):
            users.append(user)
            parts.append(name)
            hists.append(hist[-m:].tolist())
            targets.append(target.tolist())
    user_col: np.ndarray = np.asarray(users, dtype=object)
    if not user_ids_external:
        every = [*split.train.user_ids, *split.valid.user_ids, *split.test.user_ids]
        user_col = pd.Index(sort_ids(every)).get_indexer(user_col).astype(np.int64)
    return pd.DataFrame(
        {USER_ID: user_col, SPLIT: parts, HIST_ITEM_IDS: hists, TARGET_ITEM_IDS: targets}
    )
