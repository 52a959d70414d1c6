"""TwoTower: a user tower ([B, K, D]) and an item tower ([N+1, D]) scored by max inner product."""

from __future__ import annotations

import torch
from torch import nn

from mirec.data.batches import SeqBatch
from mirec.errors import ConfigError
from mirec.models.item_tower import ItemTower


class TwoTower(nn.Module):
    """Composes the towers; holds no loss and no index.

    Args:
        item_tower: item tower, [N+1, D] for all items.
        user_tower: module mapping a SeqBatch to [B, K, D]; it usually shares ``item_tower``.
        causal: True when the user tower has ``sequence_states`` (SASRec) and may be trained at
            every position.

    Attributes:
        index_serves: True when ``score_all`` is the max inner product of ``user_vectors`` and
            ``item_vectors``, so an index over the item vectors ranks as ``score_all`` does; a
            model that scores otherwise (the ItemKNN floor) sets it False and is served by
            exact scoring (``ModelBundle.score_users``).
    """

    index_serves: bool = True

    def __init__(self, item_tower: ItemTower, user_tower: nn.Module, causal: bool = False) -> None:
        super().__init__()
        self.item_tower = item_tower
        self.user_tower = user_tower
        self.causal = causal

    @property
    def num_interests(self) -> int:
        """K, the number of vectors per user."""
        return int(getattr(self.user_tower, "num_interests", 1))

    @property
    def dim(self) -> int:
        """D, the vector size."""
        return self.item_tower.dim

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        """Same as ``user_vectors``: [B, K, D]."""
        return self.user_vectors(batch)

    def user_vectors(self, batch: SeqBatch) -> torch.Tensor:
        """User interest vectors, [B, K, D]."""
        vecs: torch.Tensor = self.user_tower(batch)
        return vecs

    def sequence_states(self, batch: SeqBatch) -> torch.Tensor:
        """Output of a causal user tower at every position, [B, T, D].

        Raises:
            ConfigError: the user tower is not causal.
        """
        encoder = getattr(self.user_tower, "sequence_states", None)
        if not self.causal or encoder is None:
            raise ConfigError(f"{type(self.user_tower).__name__} has no per-position outputs")
        states: torch.Tensor = encoder(batch)
        return states

    def item_vectors(self) -> torch.Tensor:
        """Vectors of every item, [N+1, D] (row 0 = PAD)."""
        return self.item_tower.all_items()

    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        """Score every item for every user: max over interests of <v_k, e_i>.

        Equal to per-interest top-N merged by max score, as serving does. The PAD column is
        left as computed; ``mirec.metrics.rank_topk`` masks it.

        Returns:
            Tensor [B, N+1].
        """
        return max_interest_scores(self.user_vectors(batch), self.item_vectors())


def max_interest_scores(user_vecs: torch.Tensor, item_vecs: torch.Tensor) -> torch.Tensor:
    """max_k <v_k, e_i> without materialising [B, K, N].

    Args:
        user_vecs: Tensor [B, K, D].
        item_vecs: Tensor [N, D].

    Returns:
        Tensor [B, N].
    """
    scores = user_vecs[:, 0] @ item_vecs.T  # [B, N]
    for k in range(1, user_vecs.shape[1]):
        scores = torch.maximum(scores, user_vecs[:, k] @ item_vecs.T)
    return scores
