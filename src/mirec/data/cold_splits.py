"""Cold-start protocols: withheld items (cold items) and withheld users (cold users).

Cold items: a seeded share of the items is withheld from training entirely. Every user keeps
the leave-one-out cut of protocol B on the full sequence (test target = last event, valid =
second-to-last); withheld items are removed from the training sequences and from every history,
and the evaluation rows are split by whether the target is withheld. Cold users: a seeded share
of the users is withheld from training (another share for validation); each gets its first
h events (h in 0, 1, 3, 5) as history and the rest as targets. See docs/protocols.md.
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

    def cut_at(part: str, h: int | None) -> EvalData:
        rows = held[part]
        cuts = [math.floor(history_fraction * len(s)) if h is None else h for _, s in rows]
        return _eval_rows(
            [u for u, _ in rows],
            [s[:c] for (_, s), c in zip(rows, cuts, strict=True)],
            [s[c:] for (_, s), c in zip(rows, cuts, strict=True)],
        )

    counts = np.bincount(np.concatenate(train), minlength=num_items + 1).astype(np.int64)
    split = Split(
        "A",
        max_len,
        num_items,
        TrainData(np.asarray(train_users, dtype=object), train),
        cut_at("valid", None),
        cut_at("test", None),
        counts,
    )
    by_length = {p: {h: cut_at(p, h) for h in history_lengths} for p in ("valid", "test")}
    log.info(
        "cold users: %d train, %d valid, %d test users",
        len(train_users),
        len(held["valid"]),
        len(held["test"]),
    )
    return ColdUserSplit(split, by_length["valid"], by_length["test"])
