"""Cold start at inference: embed a new item from its content, a new user from their profile.

The content item tower (``models.content_tower``) and the zero-shot user tower
(``models.mail``) are parts of the TwoTower, so they travel in every bundle: the content tower
in its item-tower file, the zero-shot tower in its user-tower file (``mirec.bundle``).
This module holds the inference paths the bundle and the evaluation use, and the scorers of the
cold-start protocols (``docs/protocols.md``): items whose vectors are overridden (cold items
embedded from content, or a baseline's vectors) and users scored through the zero-shot tower.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from mirec.config import ModelConfig
from mirec.data.attributes import content_row, profile_row
from mirec.data.batches import SeqBatch, pad_left
from mirec.data.vocab import Vocabulary
from mirec.errors import ConfigError
from mirec.models.content_tower import ContentItemTower
from mirec.models.item_tower import ItemTower
from mirec.models.mail import ZeroShotTower, blend_interests
from mirec.models.two_tower import TwoTower, max_interest_scores

log = logging.getLogger(__name__)

ZERO_SHOT = "zero_shot"  # attribute of the TwoTower holding the zero-shot tower


def attach_zero_shot(cfg: ModelConfig, model: TwoTower) -> TwoTower:
    """Add the zero-shot tower as ``model.zero_shot`` when ``cfg.zero_shot.enabled``."""
    if cfg.zero_shot.enabled:
        model.add_module(ZERO_SHOT, ZeroShotTower(model.num_interests, model.dim, cfg.zero_shot))
    return model


def zero_shot_tower(model: TwoTower) -> ZeroShotTower:
    """The model's zero-shot tower; ConfigError when it was built without one."""
    tower = getattr(model, ZERO_SHOT, None)
    if not isinstance(tower, ZeroShotTower):
        raise ConfigError("this model has no zero-shot user tower (model.zero_shot.enabled)")
    return tower


def content_tower(model: TwoTower | ItemTower) -> ContentItemTower:
    """The content item tower of a model, or the item tower itself (a bundle's item side).

    Raises:
        ConfigError: the item tower is id-based.
    """
    tower = model.item_tower if isinstance(model, TwoTower) else model
    if not isinstance(tower, ContentItemTower):
        raise ConfigError("this model has no content item tower (model.item_tower: content)")
    return tower


@torch.no_grad()
def item_vectors_from_content(
    model: TwoTower | ItemTower,
    cfg: ModelConfig,
    attributes: Sequence[Sequence[str]],
    texts: Sequence[str] | None = None,
) -> np.ndarray:
    """Vectors of new items from their content, with no id: float32 [M, D].

    Args:
        model: a trained model with a content item tower, or that item tower alone.
        cfg: its model config (the hashing buckets and widths).
        attributes: M lists of attribute tokens (``"a12"``, ``"class=Comedy"``, ...).
        texts: M item texts (titles), or None for none.

    Raises:
        ConfigError: the model has no content tower, or ``texts`` and ``attributes`` differ in
            length.
    """
    tower = content_tower(model)
    texts = [""] * len(attributes) if texts is None else texts
    if len(texts) != len(attributes):
        raise ConfigError(f"{len(attributes)} attribute lists but {len(texts)} texts")
    rows = [content_row(list(a), t, cfg.content) for a, t in zip(attributes, texts, strict=True)]
    tokens = torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, 1, dtype=torch.long)
    tower.eval()
    return tower.content_vectors(tokens).numpy().astype(np.float32)


@torch.no_grad()
def user_vectors_from_profile(
    model: TwoTower, cfg: ModelConfig, profile: Sequence[str], recent_items: Sequence[int]
) -> np.ndarray:
    """Interest vectors of a user from their profile and 0.. recent items: float32 [K, D].

    With no items the zero-shot tower alone answers; with 1..``zero_shot.max_history`` items
    the ranking tower's vectors are blended with it (``zero_shot.blend``); above that the
    ranking tower answers alone.

    Args:
        model: a trained model with a zero-shot tower.
        cfg: its model config.
        profile: profile tokens (``"gender=F"``, ``"age=25"``, ...).
        recent_items: item indices of the user's events, oldest first.
    """
    model.eval()
    tokens = torch.from_numpy(profile_row(list(profile), cfg.zero_shot)).unsqueeze(0)
    batch = SeqBatch(
        hist_item_ids=pad_left([list(recent_items)], _max_len(model)),
        hist_len=torch.tensor([min(len(recent_items), _max_len(model))]),
        target_item_ids=torch.zeros(1, dtype=torch.long),
    )
    vecs = zero_shot_vectors(model, cfg, batch, tokens)
    return vecs[0].numpy().astype(np.float32)


def zero_shot_vectors(
    model: TwoTower, cfg: ModelConfig, batch: SeqBatch, profiles: torch.Tensor
) -> torch.Tensor:
    """Served interest vectors [B, K, D] for histories ``batch`` and hashed ``profiles`` [B, P].

    Only the rows that need it run the ranking tower (a history of length 0 does not).
    """
    zero = zero_shot_tower(model)(profiles)  # [B, K, D]
    zs = cfg.zero_shot
    return blend_interests(
        model.user_vectors(batch), zero, batch.hist_len, zs.max_history, zs.blend
    )


def known_items(vocab: Vocabulary, item_ids: Sequence[str]) -> list[int]:
    """Vocabulary indices of ``item_ids`` in order; ids the model does not know are left out
    with a warning that names them (a new item has no place in the history encoder)."""
    idx = vocab.encode(np.asarray(list(item_ids), dtype=object)).tolist() if item_ids else []
    unknown = [i for i, j in zip(item_ids, idx, strict=True) if j < 1]
    if unknown:
        log.warning("history items unknown to the model are left out: %s", unknown[:20])
    return [int(j) for j in idx if j >= 1]


def _max_len(model: TwoTower) -> int:
    return int(getattr(model.user_tower, "max_len", 50))


class ItemOverrideScorer:
    """Scores every item with fixed item vectors (cold items from content, or a baseline's).

    Args:
        model: the trained model (its user tower embeds the histories).
        item_vecs: Tensor [N+1, D] used in place of ``model.item_vectors()``.
    """

    def __init__(self, model: TwoTower, item_vecs: torch.Tensor) -> None:
        self.model, self.item_vecs = model, item_vecs

    def eval(self) -> None:
        """Evaluation mode of the wrapped model."""
        self.model.eval()

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """[B, N+1] max-over-interests scores against the fixed item vectors."""
        return max_interest_scores(self.model.user_vectors(batch), self.item_vecs)


class ZeroShotScorer:
    """Scores users through the zero-shot tower (``zero_shot_vectors``).

    Args:
        model: a trained model with a zero-shot tower.
        cfg: its model config (``zero_shot.max_history``, ``zero_shot.blend``).
        profiles: LongTensor [U, P] of hashed profiles, rows aligned with the evaluated data.
    """

    def __init__(self, model: TwoTower, cfg: ModelConfig, profiles: torch.Tensor) -> None:
        self.model, self.cfg, self.profiles = model, cfg, profiles

    def eval(self) -> None:
        """Evaluation mode of the wrapped model."""
        self.model.eval()

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """[B, N+1] scores; ``batch.user_idx`` picks the profile rows."""
        if batch.user_idx is None:
            raise ConfigError("zero-shot scoring needs batch.user_idx to find the profiles")
        vecs = zero_shot_vectors(self.model, self.cfg, batch, self.profiles[batch.user_idx])
        return max_interest_scores(vecs, self.model.item_vectors())


class DemographicPopularity:
    """The demographic-popularity floor for cold users: popular items among similar profiles.

    For every hashed profile token t, share_t(i) is the share of training users with t who have
    item i; a user is scored by the mean of share_t over their tokens (tokens no training user
    has are skipped; a user with none gets overall popularity). Exact profile groups are mostly
    singletons on ml-100k, so the floor backs off to each profile field.

    Args:
        sequences: the training users' sequences.
        train_profiles: int64 [U_train, P] hashed profiles of those users.
        num_items: N.
        profiles: LongTensor [U, P] hashed profiles of the evaluated rows (``batch.user_idx``).
    """

    def __init__(
        self,
        sequences: Sequence[np.ndarray],
        train_profiles: np.ndarray,
        num_items: int,
        profiles: torch.Tensor,
    ) -> None:
        counts: dict[int, np.ndarray] = {}
        users: dict[int, int] = {}
        overall = np.zeros(num_items + 1)
        for seq, row in zip(sequences, train_profiles, strict=True):
            seen = np.bincount(np.unique(seq), minlength=num_items + 1) > 0
            overall += seen
            for token in {int(t) for t in row if t}:
                counts.setdefault(token, np.zeros(num_items + 1))[seen] += 1
                users[token] = users.get(token, 0) + 1
        self.share = {t: c / users[t] for t, c in counts.items()}
        self.overall = overall / max(len(sequences), 1)
        self.profiles = profiles

    def eval(self) -> None:
        """Nothing to switch (the floor has no training mode)."""

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """[B, N+1] scores of the rows ``batch.user_idx``."""
        if batch.user_idx is None:
            raise ConfigError("demographic popularity needs batch.user_idx to find the profiles")
        rows = []
        for tokens in self.profiles[batch.user_idx].tolist():
            known = [self.share[t] for t in tokens if t in self.share]
            rows.append(np.mean(known, axis=0) if known else self.overall)
        return torch.from_numpy(np.stack(rows).astype(np.float32))
