"""Training losses: full softmax and sampled softmax (logQ, accidental hits, temperature, readout).

Towers return vectors; this module turns them into one scalar per batch. Two readouts map the
K interest vectors of a user to scores: ``max`` (score = max_k <v_k, e_i>, the same rule as
serving) and ``target_aware`` (ComiRec's hard label-aware attention: use the interest closest to
the target, chosen without gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from mirec.config import LossConfig
from mirec.data.batches import SeqBatch
from mirec.errors import ConfigError
from mirec.models.two_tower import TwoTower, max_interest_scores
from mirec.schema import PAD_ITEM_ID

Readout = Literal["max", "target_aware"]
MATMUL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_matmul_dtype(name: str) -> torch.dtype:
    """The logits-matmul dtype for ``loss.matmul_dtype``.

    ``auto`` picks bfloat16 only on CPUs with native bfloat16 units (AVX512-BF16 or AMX), where
    it is faster; without them (AVX2 only) bfloat16 matmuls are emulated and ~8x slower than
    float32, so ``auto`` keeps float32 there.
    """
    if name != "auto":
        return MATMUL_DTYPES[name]
    caps = torch.cpu.get_capabilities()
    native = bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return torch.bfloat16 if native else torch.float32


class NegativeDrawLike(Protocol):
    """What ``NegativeSampler.draw`` returns: shared negative ids and their log q."""

    @property
    def ids(self) -> torch.Tensor:
        """LongTensor [M]."""

    @property
    def log_q(self) -> torch.Tensor:
        """Tensor [M], log of each id's sampling probability."""


class NegativeSampler(Protocol):
    """The sampler interface of ``mirec.data.samplers``."""

    def draw(self, num: int, generator: torch.Generator) -> NegativeDrawLike:
        """``num`` negatives shared by the batch, with their log q."""
        ...

    def log_q(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Log probability that the sampler draws each id (same shape as ``item_ids``)."""
        ...


@dataclass(frozen=True, slots=True)
class LossOutput:
    """The loss to minimise and its named parts (logged as ``loss/<name>``)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


def readout(user_vecs: torch.Tensor, target_vecs: torch.Tensor, mode: Readout) -> torch.Tensor:
    """The query vectors a row is scored with.

    Args:
        user_vecs: Tensor [B, K, D].
        target_vecs: Tensor [B, D], the positive items (used by ``target_aware`` only).
        mode: ``max`` keeps all K vectors (scores are the max over them); ``target_aware`` keeps
            only v_{k*}, k* = argmax_k <v_k, e_target>, chosen without gradient.

    Returns:
        Tensor [B, K, D] for ``max``, [B, 1, D] for ``target_aware``; score any item set with
        ``max_interest_scores``.
    """
    if mode == "max" or user_vecs.shape[1] == 1:
        return user_vecs
    if mode != "target_aware":
        raise ConfigError(f"loss.readout {mode!r} is not 'max' or 'target_aware'")
    with torch.no_grad():
        best = torch.einsum("bkd,bd->bk", user_vecs, target_vecs).argmax(dim=1)  # [B]
    rows = torch.arange(user_vecs.shape[0], device=user_vecs.device)
    return user_vecs[rows, best].unsqueeze(1)  # [B, 1, D]


def training_rows(model: TwoTower, batch: SeqBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """User vectors and positive item ids of every training row of a batch.

    Causal models with ``pos_targets`` train at every position whose next item is real (each
    position weighs the same); other models train on ``target_item_ids``. Rows whose target is
    PAD are dropped.

    Returns:
        (user_vecs [P, K, D], targets LongTensor [P]).
    """
    if model.causal and batch.pos_targets is not None:
        states = model.sequence_states(batch)  # [B, T, D]
        valid = batch.pos_targets != PAD_ITEM_ID  # [B, T]
        return states[valid].unsqueeze(1), batch.pos_targets[valid]  # [P, 1, D], [P]
    valid = batch.target_item_ids != PAD_ITEM_ID  # [B]
    return model.user_vectors(batch)[valid], batch.target_item_ids[valid]


CE_CHUNK_ROWS = 128  # rows per chunk: a [128, N] logits block stays in cache for N ~ 10^4
CE_KEEP_PROBS_MAX = 2**25  # keep the [P, N] softmax for the backward up to this many floats


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """mean_p CE(softmax(q_p W^T), t_p), computed in row chunks with a hand-written backward.

    Equal to ``F.cross_entropy(q @ W.T, t)``. The forward computes each chunk's logits, its
    log-partition and, in place, its softmax (one exp per logit). When the [P, N] softmax has at
    most ``CE_KEEP_PROBS_MAX`` entries (128 MiB) it is kept and the backward is two matmuls;
    above that only the log-partition is kept and the backward recomputes each chunk (O(chunk x
    N) memory for large catalogues). With ``matmul_dtype=torch.bfloat16`` the matmuls run in
    bfloat16 (fast on CPUs with AMX / AVX512-BF16) while the log-sum-exp, the softmax and the
    accumulated gradients stay float32.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        queries: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        matmul_dtype: torch.dtype,
    ) -> torch.Tensor:
        rows, n = queries.shape[0], weight.shape[0]
        keep = rows * n <= CE_KEEP_PROBS_MAX
        w = weight.to(matmul_dtype)
        lse = torch.empty(rows, dtype=queries.dtype, device=queries.device)  # [P]
        probs = torch.empty(rows if keep else 0, n, dtype=queries.dtype, device=queries.device)
        in_place = keep and matmul_dtype == queries.dtype  # matmul straight into probs
        for lo in range(0, rows, CE_CHUNK_ROWS):
            q = queries[lo : lo + CE_CHUNK_ROWS].to(matmul_dtype)  # [C, D]
            if in_place:
                logits = torch.mm(q, w.T, out=probs[lo : lo + CE_CHUNK_ROWS])  # [C, N]
            else:
                logits = (q @ w.T).float()
            lse[lo : lo + CE_CHUNK_ROWS] = _softmax_(logits)
            if keep and not in_place:
                probs[lo : lo + CE_CHUNK_ROWS] = logits
        target_logits = (queries * weight[targets]).sum(dim=1)  # [P], float32
        ctx.save_for_backward(queries, weight, targets, lse, probs)
        ctx.matmul_dtype = matmul_dtype  # type: ignore[attr-defined]
        ctx.keep = keep  # type: ignore[attr-defined]
        return (lse - target_logits).mean()

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        queries, weight, targets, lse, probs = ctx.saved_tensors  # type: ignore[attr-defined]
        dtype = ctx.matmul_dtype  # type: ignore[attr-defined]
        scale = grad / targets.shape[0]
        rows = torch.arange(targets.shape[0], device=targets.device)
        if ctx.keep:  # type: ignore[attr-defined]
            probs[rows, targets] -= 1.0  # d loss / d logits, unscaled; probs is ours to reuse
            probs = probs.mul_(scale).to(dtype)
            grad_q = (probs @ weight.to(dtype)).float()
            grad_w = (probs.T @ queries.to(dtype)).float()
        else:
            grad_q, grad_w = _recomputed_grads(queries, weight, targets, lse, scale, dtype)
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        return (grad_q if needs[0] else None), (grad_w if needs[1] else None), None, None


def _softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Turn a [C, N] float32 block into its row softmax in place; return the log-partitions."""
    top = logits.amax(dim=1, keepdim=True)  # [C, 1]
    total = logits.sub_(top).exp_().sum(dim=1, keepdim=True)  # [C, 1]
    logits.div_(total)
    return (top + total.log()).squeeze(1)


def _recomputed_grads(
    queries: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    scale: torch.Tensor,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients for queries [P, D] and weight [N, D], recomputing the logits chunk by chunk."""
    w = weight.to(dtype)
    grad_q = torch.empty_like(queries)  # [P, D]
    grad_w = torch.zeros_like(weight)  # [N, D]
    for lo in range(0, queries.shape[0], CE_CHUNK_ROWS):
        q = queries[lo : lo + CE_CHUNK_ROWS].to(dtype)  # [C, D]
        probs = (q @ w.T).float().sub_(lse[lo : lo + CE_CHUNK_ROWS, None]).exp_()  # [C, N]
        rows = torch.arange(probs.shape[0], device=probs.device)
        probs[rows, targets[lo : lo + CE_CHUNK_ROWS]] -= 1.0
        probs = probs.mul_(scale).to(dtype)
        grad_q[lo : lo + CE_CHUNK_ROWS] = (probs @ w).float()
        grad_w += (probs.T @ q).float()
    return grad_q, grad_w


def full_softmax_loss(
    queries: torch.Tensor,
    item_vecs: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    matmul_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Cross-entropy over all real items (the PAD row never competes).

    Args:
        queries: Tensor [P, K', D] from ``readout``.
        item_vecs: Tensor [N+1, D], row 0 = PAD.
        targets: LongTensor [P] in 1..N.
        temperature: logits are divided by it (applied to the queries, which is the same).
        matmul_dtype: dtype of the logits matmuls for K = 1 (``torch.bfloat16`` is faster on
            CPUs with AMX); the softmax itself is always float32.
    """
    queries = queries / temperature if temperature != 1.0 else queries
    items = item_vecs[PAD_ITEM_ID + 1 :]  # [N, D]
    labels = targets - (PAD_ITEM_ID + 1)
    if queries.shape[1] == 1:
        loss: torch.Tensor = _SoftmaxCrossEntropy.apply(queries[:, 0], items, labels, matmul_dtype)
        return loss
    return F.cross_entropy(max_interest_scores(queries, items), labels)  # [P, N] logits


def _negatives(
    targets: torch.Tensor,
    cfg: LossConfig,
    sampler: NegativeSampler | None,
    generator: torch.Generator,
    num_negatives: int,
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """Shared negatives for the batch: (ids [M], log_q [M] or None, is_full_in_batch)."""
    if cfg.sampler == "in_batch":
        ids, full = targets, True
        if targets.shape[0] > num_negatives:
            pick = torch.randperm(targets.shape[0], generator=generator)[:num_negatives]
            ids, full = targets[pick.to(targets.device)], False
        log_q = sampler.log_q(ids) if cfg.logq_correction and sampler is not None else None
        return ids, log_q, full
    if sampler is None:
        raise ConfigError(f"loss.sampler {cfg.sampler!r} needs a negative sampler, got None")
    draw = sampler.draw(num_negatives, generator)
    return draw.ids.to(targets.device), draw.log_q.to(targets.device), False


def sampled_softmax_loss(
    queries: torch.Tensor,
    pos_vecs: torch.Tensor,
    neg_vecs: torch.Tensor,
    *,
    pos_log_q: torch.Tensor | None,
    neg_log_q: torch.Tensor | None,
    masked: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """Softmax of each row's positive against shared negatives.

    Logits are divided by the temperature, then log q is subtracted from every logit (positives
    included) when given, then masked negatives are set to -inf.

    Args:
        queries: Tensor [P, K', D] from ``readout``.
        pos_vecs: Tensor [P, D], each row's positive item.
        neg_vecs: Tensor [M, D], negatives shared by all rows.
        pos_log_q: Tensor [P] or None.
        neg_log_q: Tensor [M] or None.
        masked: BoolTensor [P, M] or None; True removes that negative from that row.
        temperature: softmax temperature.
    """
    queries = queries / temperature if temperature != 1.0 else queries
    pos = (queries * pos_vecs.unsqueeze(1)).sum(-1).max(dim=1).values  # [P]
    neg = max_interest_scores(queries, neg_vecs)  # [P, M]
    if pos_log_q is not None and neg_log_q is not None:
        pos = pos - pos_log_q
        neg = neg - neg_log_q.unsqueeze(0)
    if masked is not None:
        neg = neg.masked_fill(masked, float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)  # [P, 1 + M]
    return F.cross_entropy(logits, torch.zeros_like(pos, dtype=torch.long))


def _sampled_loss(
    model: TwoTower,
    user_vecs: torch.Tensor,
    targets: torch.Tensor,
    cfg: LossConfig,
    sampler: NegativeSampler | None,
    generator: torch.Generator,
    num_negatives: int,
) -> torch.Tensor:
    if cfg.logq_correction and sampler is None:
        raise ConfigError("loss.logq_correction is true but no sampler gives log q")
    neg_ids, neg_log_q, full_in_batch = _negatives(targets, cfg, sampler, generator, num_negatives)
    pos_vecs = model.item_tower(targets)  # [P, D]
    queries = readout(user_vecs, pos_vecs, cfg.readout)
    masked = (neg_ids == PAD_ITEM_ID).unsqueeze(0).expand(targets.shape[0], -1)  # [P, M]
    if cfg.remove_accidental_hits:
        masked = masked | (neg_ids.unsqueeze(0) == targets.unsqueeze(1))
    if full_in_batch:  # the row's own positive is its label, not a negative
        masked = masked | torch.eye(targets.shape[0], dtype=torch.bool, device=targets.device)
    pos_log_q = None
    if cfg.logq_correction and sampler is not None:
        pos_log_q = sampler.log_q(targets).to(pos_vecs.dtype)
    return sampled_softmax_loss(
        queries,
        pos_vecs,
        model.item_tower(neg_ids),
        pos_log_q=pos_log_q,
        neg_log_q=None if neg_log_q is None else neg_log_q.to(pos_vecs.dtype),
        masked=masked,
        temperature=cfg.temperature,
    )


def compute_loss(
    model: TwoTower,
    batch: SeqBatch,
    cfg: LossConfig,
    sampler: NegativeSampler | None,
    generator: torch.Generator,
    num_negatives: int,
) -> LossOutput:
    """The training loss of one batch.

    Args:
        model: the two towers.
        batch: histories and targets (``pos_targets`` for all-position training of causal
            models).
        cfg: loss settings (kind, sampler, logQ, accidental hits, readout, temperature).
        sampler: negative sampler for ``sampled_softmax`` (also the log q source for in-batch
            negatives); may be None for ``full_softmax``.
        generator: RNG for negatives.
        num_negatives: shared negatives per batch (the cap for in-batch negatives).

    Returns:
        LossOutput with ``parts = {cfg.kind: loss}``. A batch without any real target gives a
        zero loss that still backpropagates.

    Raises:
        ConfigError: a sampled loss without the sampler it needs.
    """
    user_vecs, targets = training_rows(model, batch)  # [P, K, D], [P]
    if targets.numel() == 0:
        loss = user_vecs.sum() * 0.0
    elif cfg.kind == "full_softmax":
        item_vecs = model.item_vectors()  # [N+1, D]
        queries = readout(user_vecs, item_vecs[targets], cfg.readout)
        loss = full_softmax_loss(
            queries, item_vecs, targets, cfg.temperature, resolve_matmul_dtype(cfg.matmul_dtype)
        )
    elif cfg.kind == "sampled_softmax":
        loss = _sampled_loss(model, user_vecs, targets, cfg, sampler, generator, num_negatives)
    else:
        raise ConfigError(f"loss.kind {cfg.kind!r} is not 'full_softmax' or 'sampled_softmax'")
    return LossOutput(total=loss, parts={cfg.kind: loss.detach()})
