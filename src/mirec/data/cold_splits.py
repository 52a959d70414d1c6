"""Cold-start protocols: withheld items (cold items) and withheld users (cold users).

Cold items: a seeded share of the items is withheld from training entirely. Every user keeps
the leave-one-out cut of protocol B on the full sequence (test target = last event, valid =
second-to-last); withheld items are removed from the training sequences and from every history,
and the evaluation rows are split by whether the target is withheld. Cold users: a seeded share
of the users is withheld from training (another share for validation); each gets its first
h events (h in 0, 1, 3, 5) as history and the rest as targets (``cut_at_lengths``);
``held_out_at_lengths`` cuts the held-out users of a protocol A split the same way (what a
training run chooses its zero-shot tower on). See docs/protocols.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mirec.data.splits import EvalData, Split, TrainData, UserSequences, user_bucket
from mirec.errors import ConfigError

log = logging.getLogger(__name__)

COLD_SEED = 4242
HISTORY_LENGTHS = (0, 1, 3, 5)


def withheld(ids: Sequence[str] | np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """bool [M]: True for the ids whose seeded hash bucket (``user_bucket``) is < ``fraction``."""
    if not 0 < fraction < 1:
        raise ConfigError(f"the withheld fraction must be in (0, 1), got {fraction}")
    return np.fromiter((user_bucket(str(i), seed) < fraction for i in ids), bool, len(ids))


def _eval_rows(
    users: list[str], histories: list[np.ndarray], targets: list[np.ndarray]
) -> EvalData:
    exclude = [np.setdiff1d(h, t) for h, t in zip(histories, targets, strict=True)]
    return EvalData(np.asarray(users, dtype=object), histories, targets, exclude)


def _subset(data: EvalData, rows: np.ndarray) -> EvalData:
    pick = np.flatnonzero(rows)
    return EvalData(
        data.user_ids[pick],
        [data.histories[i] for i in pick],
        [data.targets[i] for i in pick],
        [data.exclude[i] for i in pick],
    )


@dataclass(frozen=True)
class ColdItemSplit:
    """Protocol B with withheld items.

    Attributes:
        split: training sequences without withheld items; valid / test rows of every user.
        cold_items: bool [N+1], True at withheld item indices.
        valid_cold, valid_warm, test_cold, test_warm: the rows whose target is (not) withheld.
    """

    split: Split
    cold_items: np.ndarray
    valid_cold: EvalData
    valid_warm: EvalData
    test_cold: EvalData
    test_warm: EvalData


def split_cold_items(
    seqs: UserSequences,
    item_ids: Sequence[str] | np.ndarray,
    max_len: int,
    fraction: float = 0.1,
    seed: int = COLD_SEED,
) -> ColdItemSplit:
    """Withhold a seeded ``fraction`` of the items and cut every user as protocol B.

    Args:
        seqs: per-user sequences of item indices.
        item_ids: external ids of items 1..N (``vocab.ids``), hashed to pick the withheld ones.
        max_len: history window recorded in the split.
        fraction: share of items withheld.
        seed: seed of the hash.
    """
    num_items = len(item_ids)
    cold = np.concatenate([[False], withheld(item_ids, fraction, seed)])
    train: list[np.ndarray] = []
    rows: dict[str, tuple[list[str], list[np.ndarray], list[np.ndarray]]] = {
        "valid": ([], [], []),
        "test": ([], [], []),
    }
    for user, seq in zip(seqs.user_ids, seqs.items, strict=True):
        warm = ~cold[seq]
        if len(seq) < 3:
            train.append(seq[warm])
            continue
        train.append(seq[:-2][warm[:-2]])
        for name, cut in (("valid", len(seq) - 2), ("test", len(seq) - 1)):
            users, histories, targets = rows[name]
            users.append(user)
            histories.append(seq[:cut][warm[:cut]])
            targets.append(seq[cut : cut + 1])
    valid, test = _eval_rows(*rows["valid"]), _eval_rows(*rows["test"])
    counts = np.bincount(np.concatenate(train), minlength=num_items + 1).astype(np.int64)
    split = Split("B", max_len, num_items, TrainData(seqs.user_ids, train), valid, test, counts)
    valid_is_cold = np.array([cold[t[0]] for t in valid.targets], dtype=bool)
    test_is_cold = np.array([cold[t[0]] for t in test.targets], dtype=bool)
    log.info(
        "cold items: %d of %d withheld; %d valid and %d test users have a withheld target",
        int(cold.sum()),
        num_items,
        int(valid_is_cold.sum()),
        int(test_is_cold.sum()),
    )
    return ColdItemSplit(
        split,
        cold,
        _subset(valid, valid_is_cold),
        _subset(valid, ~valid_is_cold),
        _subset(test, test_is_cold),
        _subset(test, ~test_is_cold),
    )


@dataclass(frozen=True)
class ColdUserSplit:
    """Withheld users, each evaluated at several history lengths.

    Attributes:
        split: training users' whole sequences; valid / test = the withheld users cut at
            ``history_fraction`` (protocol A style), for early stopping and a warm reference.
        valid, test: history length h -> rows with the first h events as history, the rest
            as targets.
    """

    split: Split
    valid: dict[int, EvalData]
    test: dict[int, EvalData]


def split_cold_users(
    seqs: UserSequences,
    num_items: int,
    max_len: int,
    fraction: float = 0.1,
    seed: int = COLD_SEED,
    history_lengths: Sequence[int] = HISTORY_LENGTHS,
    history_fraction: float = 0.8,
) -> ColdUserSplit:
    """Withhold a seeded ``fraction`` of the users for test and another for validation.

    A user's bucket (``user_bucket`` with ``seed``) < ``fraction`` -> test; < 2 ``fraction`` ->
    valid; else train. A withheld user needs more than ``max(history_lengths)`` events to have
    a target at every length; shorter ones train instead (logged).
    """
    longest = max(history_lengths)
    train_users: list[str] = []
    train: list[np.ndarray] = []
    held: dict[str, list[tuple[str, np.ndarray]]] = {"valid": [], "test": []}
    too_short = 0
    for user, seq in zip(seqs.user_ids, seqs.items, strict=True):
        bucket = user_bucket(str(user), seed)
        part = "test" if bucket < fraction else "valid" if bucket < 2 * fraction else "train"
        if part != "train" and len(seq) <= longest:
            too_short, part = too_short + 1, "train"
        if part == "train":
            train_users.append(user)
            train.append(seq)
        else:
            held[part].append((user, seq))
    if too_short:
        log.info("cold users: %d withheld users have <= %d events and train", too_short, longest)

    def protocol_a(part: str) -> EvalData:
        users, sequences = [u for u, _ in held[part]], [s for _, s in held[part]]
        return _cut_rows(
            users, sequences, [math.floor(history_fraction * len(s)) for s in sequences]
        )

    counts = np.bincount(np.concatenate(train), minlength=num_items + 1).astype(np.int64)
    split = Split(
        "A",
        max_len,
        num_items,
        TrainData(np.asarray(train_users, dtype=object), train),
        protocol_a("valid"),
        protocol_a("test"),
        counts,
    )
    by_length = {
        p: cut_at_lengths([u for u, _ in held[p]], [s for _, s in held[p]], history_lengths)
        for p in ("valid", "test")
    }
    log.info(
        "cold users: %d train, %d valid, %d test users",
        len(train_users),
        len(held["valid"]),
        len(held["test"]),
    )
    return ColdUserSplit(split, by_length["valid"], by_length["test"])


def _cut_rows(
    users: Sequence[str], sequences: Sequence[np.ndarray], cuts: Sequence[int]
) -> EvalData:
    """Rows with each user's first ``cuts[i]`` events as history and the rest as targets."""
    return _eval_rows(
        list(users),
        [s[:c] for s, c in zip(sequences, cuts, strict=True)],
        [s[c:] for s, c in zip(sequences, cuts, strict=True)],
    )


def cut_at_lengths(
    users: Sequence[str], sequences: Sequence[np.ndarray], history_lengths: Sequence[int]
) -> dict[int, EvalData]:
    """The cold-user rows of whole sequences at each history length.

    Args:
        users: U external user ids.
        sequences: their U whole sequences (int64 item indices, oldest first), each longer
            than ``max(history_lengths)``.
        history_lengths: the lengths h.

    Returns:
        h -> rows of the same users in the same order: the first h events as history, all the
        rest as targets.
    """
    return {h: _cut_rows(users, sequences, [h] * len(sequences)) for h in history_lengths}


def held_out_at_lengths(data: EvalData, history_lengths: Sequence[int]) -> dict[int, EvalData]:
    """Protocol A held-out users (valid or test rows) re-cut at each history length.

    A protocol A row's history and targets are its user's whole sequence in order, so the
    users of ``data`` become cold users as ``split_cold_users`` cuts them; those with no more
    than ``max(history_lengths)`` events have no target at every length and are left out.

    Args:
        data: protocol A rows (``Split.valid`` or ``Split.test`` of ``split_users``).
        history_lengths: the lengths h.

    Returns:
        h -> rows (``cut_at_lengths``) of the users long enough, in the order of ``data``.
    """
    longest = max(history_lengths)
    users, sequences = [], []
    for user, hist, target in zip(data.user_ids, data.histories, data.targets, strict=True):
        if len(hist) + len(target) > longest:
            users.append(user)
            sequences.append(np.concatenate([hist, target]))
    if len(users) < len(data):
        log.info(
            "cold users: %d of %d held-out users have <= %d events and are left out",
            len(data) - len(users),
            len(data),
            longest,
        )
    return cut_at_lengths(users, sequences, history_lengths)
