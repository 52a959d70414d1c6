"""Prepared inputs of a training run: vocabulary, split, item attributes, data fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mirec.config import TrainConfig
from mirec.data.attributes import item_feature_matrix, user_profile_matrix
from mirec.data.events import Dataset
from mirec.data.splits import Split, make_split
from mirec.data.vocab import Vocabulary
from mirec.schema import EVENT_TS, ITEM_ID, SEQ_POS, USER_ID


@dataclass(frozen=True)
class Prepared:
    """Vocabulary, split and item attributes derived from a dataset for one config."""

    vocab: Vocabulary
    split: Split
    item_attributes: np.ndarray | None
    data_fingerprint: str
    user_profiles: np.ndarray | None = None  # hashed, rows of split.train (model.zero_shot)


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
    profiles = None
    if cfg.model.zero_shot.enabled:
        profiles = user_profile_matrix(dataset.users, split.train.user_ids, cfg.model.zero_shot)
    return Prepared(vocab, split, attrs, data_fingerprint(dataset.events), profiles)
