"""Multi-tower multi-interest user tower: item tower -> history encoder -> K-interest extractor.

Design of seed 000 ("Multi-Tower Multi-Interest Recommendation with User Representation Repel",
Xiong & Yu, arXiv 2403.05122). That paper was withdrawn (v2, "Not accepted by conference") and
its text, code and numbers are unavailable, so this module is our interpretation of its
abstract, not a reproduction: a separate item tower (id + optional attributes) embeds both the
candidates and the user's history; a stack of bidirectional transformer blocks contextualises
the history; a ComiRec-SA, ComiRec-DR or MIND extractor turns it into K interest vectors. The
objective that goes with it (max-over-interests readout, interest repel) lives in
``mirec.objectives``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from mirec.data.batches import SeqBatch
from mirec.models.common import right_aligned_positions
from mirec.models.item_tower import EMBED_INIT_STD, ItemTower
from mirec.models.sasrec import Block


class Extractor(Protocol):
    """A multi-interest head: history vectors [B, T, D] and mask [B, T] -> [B, K, D]."""

    num_interests: int
    routing: torch.Tensor | None

    def extract(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class MultiTower(nn.Module):
    """Item-tower embeddings of the history, contextualised, then split into K interests.

    The encoder adds right-aligned positions and runs ``num_layers`` transformer blocks in which
    every real position attends to every real position (the history holds no target, so no
    causal mask is needed); padded positions attend only to themselves and are zeroed before the
    extractor. With ``num_layers = 0`` the tower is the extractor on the item tower's vectors.
    ``routing`` is the extractor's routing matrix of the last forward, [B, K, T].

    Args:
        item_tower: the item tower shared with the candidates.
        extractor: an ``Extractor`` (``ComiRecSA``, ``ComiRecDR`` or ``MIND``).
        max_len: the longest history the tower accepts.
        num_layers, num_heads, ffn_dim, dropout, norm: the encoder blocks (``sasrec.Block``).
    """

    def __init__(
        self,
        item_tower: ItemTower,
        extractor: nn.Module,
        max_len: int,
        num_layers: int = 1,
        num_heads: int = 2,
        ffn_dim: int = 256,
        dropout: float = 0.2,
        norm: str = "pre",
    ) -> None:
        super().__init__()
        self.item_tower = item_tower
        self.extractor = extractor
        self.num_interests = int(getattr(extractor, "num_interests"))  # noqa: B009
        self.max_len = max_len
        self.positions = nn.Embedding(max_len, item_tower.dim)
        nn.init.normal_(self.positions.weight, std=EMBED_INIT_STD)
        self.input_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(item_tower.dim, num_heads, ffn_dim, dropout, norm) for _ in range(num_layers)
        )

    @property
    def routing(self) -> torch.Tensor | None:
        """The extractor's routing matrix from the last forward, [B, K, T]."""
        routing = getattr(self.extractor, "routing", None)
        return routing if isinstance(routing, torch.Tensor) else None

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        """Interest vectors, [B, K, D]."""
        mask = batch.mask  # [B, T]
        keep = mask.unsqueeze(-1)  # [B, T, 1]
        h = self.item_tower(batch.hist_item_ids)  # [B, T, D]
        if self.blocks:
            pos = right_aligned_positions(h.shape[1], self.max_len, h.device)  # [T]
            h = self.input_drop(h + self.positions(pos))
            eye = torch.eye(h.shape[1], dtype=torch.bool, device=h.device)  # [T, T]
            allowed = (mask[:, None, :] | eye).unsqueeze(1)  # [B, 1, T, T]
            for block in self.blocks:
                h = block(h, allowed)
        extract = getattr(self.extractor, "extract")  # noqa: B009 (nn.Module typing)
        vecs: torch.Tensor = extract(h * keep, mask)
        return vecs
