"""MIND user tower (Li et al., CIKM 2019) as implemented in ComiRec (``bilinear_type=0``)."""

from __future__ import annotations

import torch
from torch import nn

from mirec.data.batches import SeqBatch
from mirec.models.comirec import routed_capsules, routing_rows
from mirec.models.common import right_aligned_positions
from mirec.models.item_tower import ItemTower


class MIND(nn.Module):
    """Multi-interest extraction by capsule routing with one shared bilinear map.

    Every behaviour is mapped by the same S in R^{D x D}, so the K interests differ only through
    the routing logits, which start from a truncated N(0, 1) draw. In training the draw is fresh
    for every example (as in the TF code); in eval mode a fixed draw made at construction (kept in
    the state dict, right-aligned by position) is used so that serving and evaluation are
    deterministic and padding-invariant. Dynamic K and the optional ReLU projection of the
    ComiRec code are not implemented. An empty history gives K zero vectors. After each forward
    ``routing`` holds the last coupling coefficients with rows rescaled over the positions
    (``routing_rows``), [B, K, T].

    Args:
        item_tower: shared item tower (history embeddings).
        max_len: the longest history the tower accepts.
        num_interests: K.
        routing_iters: routing iterations.
    """

    def __init__(
        self, item_tower: ItemTower, max_len: int, num_interests: int = 4, routing_iters: int = 3
    ) -> None:
        super().__init__()
        self.item_tower = item_tower
        self.dim = item_tower.dim
        self.max_len = max_len
        self.num_interests = num_interests
        self.routing_iters = routing_iters
        self.shared_map = nn.Linear(self.dim, self.dim, bias=False)
        eval_logits = nn.init.trunc_normal_(torch.empty(num_interests, max_len), a=-2.0, b=2.0)
        self.eval_logits: torch.Tensor
        self.register_buffer("eval_logits", eval_logits)  # [K, max_len], column p = position p
        self.routing: torch.Tensor | None = None

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        """Interest vectors, [B, K, D]."""
        mask = batch.mask  # [B, T]
        return self.extract(self.item_tower(batch.hist_item_ids) * mask.unsqueeze(-1), mask)

    def extract(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Interest vectors [B, K, D] from history vectors h [B, T, D] (zero at padding)."""
        b, t, _ = h.shape
        pos = right_aligned_positions(t, self.max_len, h.device)  # [T]
        hat = self.shared_map(h).unsqueeze(1).expand(b, self.num_interests, t, self.dim)
        if self.training:
            logits = nn.init.trunc_normal_(hat.new_empty(b, self.num_interests, t), a=-2.0, b=2.0)
        else:
            logits = self.eval_logits[:, pos].unsqueeze(0).expand(b, -1, -1)  # [B, K, T]
        capsules, coupling = routed_capsules(hat, mask, logits, self.routing_iters)
        self.routing = routing_rows(coupling)
        return capsules
