"""Content item tower (MMSRec-style, seed 004): an item is embedded from its content, not its id.

An item's content is a row of hashed tokens (``mirec.data.attributes.content_matrix``): the
first ``max_attrs`` columns are attribute tokens, the rest hashed words and character trigrams
of its text. The attribute bag is summed (as the id+attribute tower's ``attribute_pool: sum``:
a mean would let four genres drown the release year, and on ml-100k it halved the warm recall
in the same budget), the text bag is averaged, and a small MLP over both adds a residual whose
last layer starts at zero (the tower starts as the plain sum of the bags; a shared output bias
would otherwise dwarf the 0.02-scale embeddings). The id embedding is an add-on for items seen
in training (``has_id``); a cold item simply lacks it, and id-dropout in training makes the
content path carry the item alone. The user towers read history items through this tower, so
the user encoder's output retrieves the item encoder's output (the dual-tower layout).
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.config import ContentConfig
from mirec.errors import ConfigError, DataValidationError
from mirec.models.item_tower import EMBED_INIT_STD, ItemTower
from mirec.schema import PAD_ITEM_ID


def mean_bag(table: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    """Mean of the non-zero tokens' embeddings: [..., L] -> [..., D] (0 when none)."""
    present = (tokens != 0).unsqueeze(-1)  # [..., L, 1]
    summed = table(tokens).sum(-2)  # [..., D]
    return summed / present.sum(-2).clamp(min=1)


def sum_bag(table: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    """Sum of the non-zero tokens' embeddings (row 0 is zero): [..., L] -> [..., D]."""
    return table(tokens).sum(-2)


class ContentItemTower(ItemTower):
    """Hashed attribute bag + hashed text bag -> MLP -> [.., D], plus the id add-on.

    Args:
        num_items: N (indices 1..N; 0 is padding).
        dim: D.
        content: LongTensor [N+1, max_attrs + text_tokens] of hashed content tokens (0 = none);
            not part of the state dict (``content_matrix`` rebuilds it; the bundle stores it).
        cfg: bucket counts, column split, ``use_id`` and ``id_dropout``.

    Raises:
        DataValidationError: the content matrix has the wrong shape or out-of-range tokens.
    """

    def __init__(self, num_items: int, dim: int, content: torch.Tensor, cfg: ContentConfig):
        super().__init__(num_items, dim)
        self.cfg = cfg
        self.item_attributes = _check_content(content, num_items, cfg)
        self.attr_table = _bag_table(cfg.attr_buckets, dim)
        self.text_table = _bag_table(cfg.text_buckets, dim)
        last = nn.Linear(2 * dim, dim)
        # the mix starts at 0, so the tower starts as the plain sum of the two bags
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mix = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.GELU(), last)
        # True for items the id add-on applies to (seen in training); set by the trainer
        self.has_id: torch.Tensor
        self.register_buffer("has_id", torch.zeros(num_items + 1, dtype=torch.bool))

    def content_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embed content rows without ids: [..., max_attrs + text_tokens] -> [..., D].

        A row without any token embeds as 0 (an item with no content cannot be told apart).
        """
        a = self.cfg.max_attrs
        attrs = sum_bag(self.attr_table, tokens[..., :a])  # [..., D]
        text = mean_bag(self.text_table, tokens[..., a:])  # [..., D]
        bags = torch.cat([attrs, text], dim=-1)  # [..., 2D]
        vecs = attrs + text + self.mix(bags)  # [..., D]
        return vecs * (tokens != 0).any(-1, keepdim=True)

    def forward(self, item_idx: torch.Tensor) -> torch.Tensor:
        """Embed item indices: content (+ id for items with one); PAD rows are zero."""
        assert self.item_attributes is not None
        vecs = self.content_vectors(self.item_attributes[item_idx])
        return vecs + self._id_part(item_idx)

    def all_items(self) -> torch.Tensor:
        """Vectors of every item, [N+1, D]; row 0 (PAD) is zero."""
        idx = torch.arange(self.num_items + 1, device=self.embedding.weight.device)
        return self(idx)

    def _id_part(self, item_idx: torch.Tensor) -> torch.Tensor:
        """The id add-on [..., D]: zero for PAD, for items without an id and, in training, for a
        random ``id_dropout`` share of the rows."""
        if not self.cfg.use_id:
            return torch.zeros(*item_idx.shape, self.dim, device=item_idx.device)
        keep = self.has_id[item_idx] & (item_idx != PAD_ITEM_ID)  # [...]
        if self.training and self.cfg.id_dropout > 0:
            keep = keep & (
                torch.rand(item_idx.shape, device=item_idx.device) >= self.cfg.id_dropout
            )
        return self.embedding(item_idx) * keep.unsqueeze(-1)

    def set_known_items(self, item_counts: torch.Tensor) -> None:
        """Give the id add-on to the items with training events (count > 0), [N+1]."""
        if item_counts.shape != self.has_id.shape:
            raise DataValidationError(
                f"item counts have shape {list(item_counts.shape)}, the tower has "
                f"{self.num_items + 1} rows"
            )
        self.has_id.copy_(item_counts > 0)
        self.has_id[PAD_ITEM_ID] = False


def _bag_table(buckets: int, dim: int) -> nn.Embedding:
    table = nn.Embedding(buckets + 1, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=EMBED_INIT_STD)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


def _check_content(content: torch.Tensor, num_items: int, cfg: ContentConfig) -> torch.Tensor:
    """Validate the content matrix and return it as int64 [N+1, max_attrs + text_tokens]."""
    tokens = torch.as_tensor(content)
    width = cfg.max_attrs + cfg.text_tokens
    if tokens.dim() != 2 or tuple(tokens.shape) != (num_items + 1, width):
        raise DataValidationError(
            f"content matrix must have shape [num_items + 1, max_attrs + text_tokens] = "
            f"[{num_items + 1}, {width}], got {list(tokens.shape)}"
        )
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise DataValidationError(f"content matrix must hold integer tokens, got {tokens.dtype}")
    tokens = tokens.long()
    a = cfg.max_attrs
    for name, part, buckets in (
        ("attribute", tokens[:, :a], cfg.attr_buckets),
        ("text", tokens[:, a:], cfg.text_buckets),
    ):
        if part.numel() and (int(part.min()) < 0 or int(part.max()) > buckets):
            raise DataValidationError(f"content matrix has {name} tokens outside 0..{buckets}")
    return tokens


def build_item_tower(
    name: str, num_items: int, dim: int, attrs: torch.Tensor | None, pool: str, cfg: ContentConfig
) -> ItemTower:
    """The item tower named by ``model.item_tower``: ``id`` (ItemTower) or ``content``.

    Raises:
        ConfigError: an unknown name, or ``content`` without a content matrix.
    """
    if name == "id":
        return ItemTower(num_items, dim, attrs, pool)
    if name != "content":
        raise ConfigError(f"model.item_tower must be 'id' or 'content', got {name!r}")
    if attrs is None:
        raise ConfigError("model.item_tower=content needs the item content matrix")
    return ContentItemTower(num_items, dim, attrs, cfg)
