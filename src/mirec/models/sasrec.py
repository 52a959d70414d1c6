"""SASRec user tower: pre-LN causal transformer over the history; K = 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mirec.data.batches import SeqBatch
from mirec.errors import ConfigError
from mirec.models.common import right_aligned_positions
from mirec.models.item_tower import EMBED_INIT_STD, ItemTower


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a boolean [B, 1, T, T] "may attend" mask."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"model.dim {dim} is not divisible by model.num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Args: x [B, T, D]; allowed BoolTensor [B, 1, T, T]. Returns [B, T, D]."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)  # 3 x [B, T, D]
        q, k, v = (
            z.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2) for z in (q, k, v)
        )  # [B, H, T, D/H]
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)
        return self.out(y.transpose(1, 2).reshape(b, t, d))  # [B, T, D]


class Block(nn.Module):
    """Transformer block with GELU FFN, pre-LN or post-LN.

    pre: x + attn(LN(x)), then x + FFN(LN(x)). post (BERT, S3-Rec/ICLRec code): LN(x + attn(x)),
    then LN(x + FFN(x)).
    """

    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, dropout: float, norm: str = "pre"
    ) -> None:
        super().__init__()
        self.norm_first = norm != "post"  # "pre" and "pre_in" blocks are alike
        self.ln_attn = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, num_heads, dropout)
        self.ln_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Args: x [B, T, D]; allowed [B, 1, T, T]. Returns [B, T, D]."""
        if self.norm_first:
            x = x + self.drop(self.attn(self.ln_attn(x), allowed))
            return x + self.drop(self.ffn(self.ln_ffn(x)))
        x = self.ln_attn(x + self.drop(self.attn(x, allowed)))
        return self.ln_ffn(x + self.drop(self.ffn(x)))


class SASRec(nn.Module):
    """Self-attentive sequential recommender (Kang & McAuley 2018), ICLRec-style settings.

    Inputs are the item tower's embeddings of the history plus learnable positions counted from
    the right end (the newest item is position 0), so left padding never shifts a position. Each
    position attends to itself and to earlier real items; padded positions attend only to
    themselves, so no attention row is empty and no NaN appears. The user vector is the output at
    the last column (the newest item); an empty history yields a learned vector (position 0 of a
    PAD item).

    Args:
        item_tower: shared item tower (input embeddings).
        max_len: the longest history the tower accepts (number of positions).
        num_layers: transformer blocks.
        num_heads: attention heads (must divide D).
        ffn_dim: hidden size of the feed-forward layer.
        dropout: dropout on embeddings, attention, FFN and residual branches.
        norm: "pre" (pre-LN blocks and a LayerNorm on the output), "pre_in" (the same plus a
            LayerNorm on the input embeddings, as in common pre-LN SASRec code) or "post" (the
            S3-Rec / ICLRec layout: a LayerNorm on the input embeddings and after each
            residual; on Beauty it beat pre-LN with sampled softmax, see
            configs/beauty_sasrec_attr.yaml). The default stays "pre" so that bundles trained
            before the option existed load unchanged.
    """

    num_interests = 1

    def __init__(
        self,
        item_tower: ItemTower,
        max_len: int,
        num_layers: int = 2,
        num_heads: int = 2,
        ffn_dim: int = 256,
        dropout: float = 0.2,
        norm: str = "pre",
    ) -> None:
        super().__init__()
        if norm not in ("pre", "pre_in", "post"):
            raise ConfigError(f"model.norm must be 'pre', 'pre_in' or 'post', got {norm!r}")
        self.item_tower = item_tower
        self.dim = item_tower.dim
        self.max_len = max_len
        self.positions = nn.Embedding(max_len, self.dim)
        nn.init.normal_(self.positions.weight, std=EMBED_INIT_STD)
        self.input_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(self.dim, num_heads, ffn_dim, dropout, norm) for _ in range(num_layers)
        )
        # pre-LN normalises the output; post-LN normalises the input (blocks end in a LN)
        self.ln_out = nn.LayerNorm(self.dim)
        self.ln_in = nn.LayerNorm(self.dim) if norm == "pre_in" else None  # pre_in: both
        self.norm_first = norm != "post"

    def sequence_states(self, batch: SeqBatch) -> torch.Tensor:
        """Output at every position (position t sees items up to t only).

        Args:
            batch: histories, LongTensor [B, T] left-padded.

        Returns:
            Tensor [B, T, D]; rows at padded positions are defined but meaningless.
        """
        items = batch.hist_item_ids
        t = items.shape[1]
        pos = right_aligned_positions(t, self.max_len, items.device)  # [T]
        x = self.item_tower(items) + self.positions(pos)  # [B, T, D]
        if self.ln_in is not None:
            x = self.ln_in(x)
        x = self.input_drop(x if self.norm_first else self.ln_out(x))
        allowed = _attention_mask(batch.mask)  # [B, 1, T, T]
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln_out(x) if self.norm_first else x

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        """User vector from the newest position, [B, 1, D]."""
        return self.sequence_states(batch)[:, -1:, :]  # [B, 1, D]


def _attention_mask(real: torch.Tensor) -> torch.Tensor:
    """Causal and padding mask: query t may see key s <= t when s is real, and always itself.

    Args:
        real: BoolTensor [B, T], True at non-pad positions.

    Returns:
        BoolTensor [B, 1, T, T].
    """
    t = real.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=real.device).tril()  # [T, T]
    eye = torch.eye(t, dtype=torch.bool, device=real.device)  # [T, T]
    return ((causal & real[:, None, :]) | eye).unsqueeze(1)  # [B, 1, T, T]
