"""ComiRec user towers (Cen et al., KDD 2020): self-attentive (SA) and dynamic-routing (DR).

Both follow THUDM/ComiRec ``src/model.py``. One deliberate change: positions (SA's positional
embedding, DR's per-position bilinear maps) are counted from the right end of the history (the
newest item is position 0) instead of from the left, so that left padding is harmless. For a
history of exactly ``max_len`` items this is the same parametrisation, mirrored.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.data.batches import SeqBatch
from mirec.models.common import right_aligned_positions, squash
from mirec.models.item_tower import EMBED_INIT_STD, ItemTower

_MASKED = -(2.0**32) + 1  # the TF code's padding logit: finite, so an empty row stays finite


class ComiRecSA(nn.Module):
    """Self-attentive multi-interest extractor (ComiRec-SA).

    A = softmax over positions of W2 tanh(W1 (H + P)); V = A H, with H the (masked) history
    embeddings without positions. An empty history gives K zero vectors. After each forward
    ``routing`` holds A, [B, K, T] (rows sum to 1 over the real positions), for REMI's routing
    regularisation and the collapse diagnostics.

    Args:
        item_tower: shared item tower (history embeddings).
        max_len: the longest history the tower accepts.
        num_interests: K.
    """

    def __init__(self, item_tower: ItemTower, max_len: int, num_interests: int = 4) -> None:
        super().__init__()
        self.item_tower = item_tower
        self.dim = item_tower.dim
        self.max_len = max_len
        self.num_interests = num_interests
        self.positions = nn.Embedding(max_len, self.dim)
        nn.init.normal_(self.positions.weight, std=EMBED_INIT_STD)
        self.hidden = nn.Linear(self.dim, 4 * self.dim)  # W1, tanh
        self.attention = nn.Linear(4 * self.dim, num_interests, bias=False)  # W2
        self.routing: torch.Tensor | None = None

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        """Interest vectors, [B, K, D]."""
        mask = batch.mask  # [B, T]
        return self.extract(self.item_tower(batch.hist_item_ids) * mask.unsqueeze(-1), mask)

    def extract(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Interest vectors [B, K, D] from history vectors h [B, T, D] (zero at padding)."""
        pos = right_aligned_positions(h.shape[1], self.max_len, h.device)  # [T]
        logits = self.attention(torch.tanh(self.hidden(h + self.positions(pos))))  # [B, T, K]
        logits = logits.transpose(1, 2).masked_fill(~mask.unsqueeze(1), _MASKED)  # [B, K, T]
        weights = torch.softmax(logits, dim=-1) * mask.unsqueeze(1)  # [B, K, T]
        self.routing = weights
        return weights @ h  # [B, K, D]


def dynamic_routing(
    item_hat: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor, iterations: int
) -> torch.Tensor:
    """The capsules of ``routed_capsules`` alone, Tensor [B, K, D]."""
    return routed_capsules(item_hat, mask, logits, iterations)[0]


def routed_capsules(
    item_hat: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Capsule routing as in ComiRec's ``CapsuleNetwork``.

    Coupling coefficients are a softmax over the INTEREST axis (the TF code, ``axis=1``; the
    PyTorch port and REMI use the sequence axis instead), zeroed at padded positions. Every
    iteration but the last routes a stop-gradient copy of the predictions; the last one routes
    the predictions with gradient and its squashed capsules are the output.

    Args:
        item_hat: predictions e_hat_{k|t}, Tensor [B, K, T, D].
        mask: BoolTensor [B, T], True at real positions.
        logits: initial routing logits b, Tensor [B, K, T] (no gradient needed).
        iterations: routing iterations (3 in the paper).

    Returns:
        (interest capsules [B, K, D], zero for an empty history; the last iteration's coupling
        coefficients [B, K, T], zero at padding).
    """
    item_hat_iter = item_hat.detach()
    keep = mask.unsqueeze(1).to(item_hat.dtype)  # [B, 1, T]
    capsules = item_hat.new_zeros(item_hat.shape[0], item_hat.shape[1], item_hat.shape[3])
    coupling = logits.new_zeros(logits.shape)
    for i in range(iterations):
        coupling = torch.softmax(logits, dim=1) * keep  # [B, K, T]
        last = i == iterations - 1
        source = item_hat if last else item_hat_iter
        capsules = squash(torch.einsum("bkt,bktd->bkd", coupling, source))  # [B, K, D]
        if not last:
            logits = logits + torch.einsum("bktd,bkd->bkt", item_hat_iter, capsules)
    return capsules, coupling


def routing_rows(coupling: torch.Tensor) -> torch.Tensor:
    """Coupling coefficients [B, K, T] rescaled so that each interest's row sums to 1 over the
    positions (capsule coupling sums to 1 over the interests instead); all-zero rows stay 0."""
    return coupling / coupling.sum(-1, keepdim=True).clamp(min=1e-12)


class ComiRecDR(nn.Module):
    """Dynamic-routing multi-interest extractor (ComiRec-DR, ``bilinear_type=2``).

    Each (position, interest) pair has its own map W_{t,k} in R^{D x D} (random-normal init as in
    the TF code): e_hat_{k|t} = W_{t,k} e_t. Routing logits start at 0. After each forward
    ``routing`` holds the last coupling coefficients, each interest's row rescaled to sum to 1
    over the positions (``routing_rows``), [B, K, T].

    Args:
        item_tower: shared item tower (history embeddings).
        max_len: the longest history the tower accepts (number of per-position maps).
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
        self.bilinear = nn.Parameter(torch.randn(max_len, num_interests * self.dim, self.dim))
        self.routing: torch.Tensor | None = None

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        """Interest vectors, [B, K, D]."""
        mask = batch.mask  # [B, T]
        return self.extract(self.item_tower(batch.hist_item_ids) * mask.unsqueeze(-1), mask)

    def extract(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Interest vectors [B, K, D] from history vectors h [B, T, D] (zero at padding)."""
        b, t, _ = h.shape
        pos = right_aligned_positions(t, self.max_len, h.device)  # [T]
        hat = torch.einsum("tod,btd->bto", self.bilinear[pos], h)  # [B, T, K*D]
        hat = hat.view(b, t, self.num_interests, self.dim).transpose(1, 2)  # [B, K, T, D]
        logits = hat.new_zeros(b, self.num_interests, t)  # [B, K, T]
        capsules, coupling = routed_capsules(hat, mask, logits, self.routing_iters)
        self.routing = routing_rows(coupling)
        return capsules
