"""Item tower: item index (+ optional mean-pooled attribute tokens) -> D-dimensional vector."""

from __future__ import annotations

import torch
from torch import nn

from mirec.errors import ConfigError, DataValidationError
from mirec.schema import PAD_ITEM_ID

EMBED_INIT_STD = 0.02


class ItemTower(nn.Module):
    """ID embedding, plus the pooled attribute embeddings when attributes are given.

    The same table embeds the user's history and scores candidates (ComiRec's single table,
    SASRec's shared input/output embedding). Row ``PAD_ITEM_ID`` (0) is all zeros and gets no
    gradient.

    Args:
        num_items: N, the number of real items (indices 1..N; 0 is padding).
        dim: D, the embedding size.
        item_attributes: optional LongTensor [N+1, A] of attribute token indices per item,
            right-padded with 0 (0 = no attribute; row 0 is the PAD item). Not trainable and not
            part of the state dict: whoever rebuilds the tower passes the same matrix again.
        attribute_pool: "mean" (the average of the item's attribute embeddings) or "sum" (their
            sum, so an item's brand weighs as much as its id whatever its number of categories).

    Raises:
        ConfigError: an unknown ``attribute_pool``.
        DataValidationError: the attribute matrix is not [N+1, A] of non-negative integers.
    """

    def __init__(
        self,
        num_items: int,
        dim: int,
        item_attributes: torch.Tensor | None = None,
        attribute_pool: str = "mean",
    ) -> None:
        super().__init__()
        if attribute_pool not in ("mean", "sum"):
            raise ConfigError(
                f"model.attribute_pool must be 'mean' or 'sum', got {attribute_pool!r}"
            )
        self.attribute_pool = attribute_pool
        self.num_items = num_items
        self.dim = dim
        self.embedding = nn.Embedding(num_items + 1, dim, padding_idx=PAD_ITEM_ID)
        nn.init.normal_(self.embedding.weight, std=EMBED_INIT_STD)
        with torch.no_grad():
            self.embedding.weight[PAD_ITEM_ID].zero_()
        self.attr_embedding: nn.Embedding | None = None
        self.item_attributes: torch.Tensor | None
        if item_attributes is None:
            self.register_buffer("item_attributes", None, persistent=False)
            return
        attrs = _check_attributes(item_attributes, num_items)
        self.register_buffer("item_attributes", attrs, persistent=False)
        num_tokens = int(attrs.max().item()) + 1 if attrs.numel() else 1
        self.attr_embedding = nn.Embedding(num_tokens, dim, padding_idx=0)
        nn.init.normal_(self.attr_embedding.weight, std=EMBED_INIT_STD)
        with torch.no_grad():
            self.attr_embedding.weight[0].zero_()

    def forward(self, item_idx: torch.Tensor) -> torch.Tensor:
        """Embed item indices.

        Args:
            item_idx: LongTensor [...] of item indices in 0..N.

        Returns:
            Tensor [..., D]; PAD rows are zero.
        """
        vecs = self.embedding(item_idx)
        if self.attr_embedding is None or self.item_attributes is None:
            return vecs
        return vecs + self._pooled_attributes(self.item_attributes[item_idx])

    def all_items(self) -> torch.Tensor:
        """Vectors of every item, [N+1, D]; row 0 (PAD) is zero and callers mask it."""
        if self.attr_embedding is None or self.item_attributes is None:
            return self.embedding.weight
        return self.embedding.weight + self._pooled_attributes(self.item_attributes)

    def attribute_vectors(self) -> torch.Tensor:
        """Every item's pooled attribute embeddings without its id, [N+1, D].

        What a cold item's vector is under the "attributes of a trained id+attribute model"
        cold-start baseline.

        Raises:
            ConfigError: the tower was built without attributes.
        """
        if self.attr_embedding is None or self.item_attributes is None:
            raise ConfigError("the item tower has no attributes (model.use_attributes)")
        return self._pooled_attributes(self.item_attributes)

    def _pooled_attributes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean or sum of the non-zero attribute embeddings: [..., A] -> [..., D] (0 when none)."""
        assert self.attr_embedding is not None
        present = (tokens != 0).unsqueeze(-1)  # [..., A, 1]
        summed = self.attr_embedding(tokens).sum(-2)  # [..., D]
        if self.attribute_pool == "sum":
            return summed
        count = present.sum(-2).clamp(min=1)  # [..., 1]
        return summed / count


def _check_attributes(item_attributes: torch.Tensor, num_items: int) -> torch.Tensor:
    """Validate the attribute matrix and return it as int64 [N+1, A]."""
    attrs = torch.as_tensor(item_attributes)
    if attrs.dim() != 2 or attrs.shape[0] != num_items + 1:
        raise DataValidationError(
            f"item_attributes must have shape [num_items + 1, A] = [{num_items + 1}, A], "
            f"got {list(attrs.shape)}"
        )
    if attrs.dtype.is_floating_point or attrs.dtype == torch.bool:
        raise DataValidationError(f"item_attributes must be integer tokens, got {attrs.dtype}")
    attrs = attrs.long()
    if attrs.numel() and int(attrs.min().item()) < 0:
        raise DataValidationError("item_attributes holds negative token indices")
    return attrs
