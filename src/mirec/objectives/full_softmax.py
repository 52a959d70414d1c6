"""Full-softmax cross-entropy over every real item, chunked, with a hand-written backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from mirec.objectives.base import LossContext, Readout, interest_scores, readout
from mirec.objectives.registry import register_main
from mirec.schema import PAD_ITEM_ID

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
    readout_mode: Readout = "max",
    readout_temperature: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy over all real items (the PAD row never competes).

    Args:
        queries: Tensor [P, K', D] from ``readout``.
        item_vecs: Tensor [N+1, D], row 0 = PAD.
        targets: LongTensor [P] in 1..N.
        temperature: logits are divided by it (applied to the queries, which is the same).
        matmul_dtype: dtype of the logits matmuls for K = 1 (``torch.bfloat16`` is faster on
            CPUs with AMX); the softmax itself is always float32.
        readout_mode, readout_temperature: how K > 1 query vectors pool (``interest_scores``).
    """
    queries = queries / temperature if temperature != 1.0 else queries
    items = item_vecs[PAD_ITEM_ID + 1 :]  # [N, D]
    labels = targets - (PAD_ITEM_ID + 1)
    if queries.shape[1] == 1:
        loss: torch.Tensor = _SoftmaxCrossEntropy.apply(queries[:, 0], items, labels, matmul_dtype)
        return loss
    scores = interest_scores(queries, items, readout_mode, readout_temperature)  # [P, N]
    return F.cross_entropy(scores, labels)


@register_main("full_softmax")
def full_softmax_objective(ctx: LossContext) -> torch.Tensor:
    """``loss.kind: full_softmax``: every real item competes with each row's target."""
    item_vecs = ctx.model.item_vectors()  # [N+1, D]
    queries = readout(ctx.user_vecs, item_vecs[ctx.targets], ctx.cfg.readout)
    dtype = resolve_matmul_dtype(ctx.cfg.matmul_dtype)
    cfg = ctx.cfg
    temps = (cfg.temperature, dtype, cfg.readout, cfg.readout_temperature)
    return full_softmax_loss(queries, item_vecs, ctx.targets, *temps)
