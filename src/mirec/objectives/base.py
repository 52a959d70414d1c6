"""What every objective shares: the batch context, readouts, sampler protocols, the output.

Three readouts map the K interest vectors of a user to scores: ``max`` (score = max_k <v_k, e_i>,
the same rule as serving), ``logsumexp`` (its smooth version, tau * logsumexp_k(<v_k, e_i> / tau),
which tends to ``max`` as tau -> 0 and every interest gets gradient) and ``target_aware``
(ComiRec's hard label-aware attention: use the interest closest to the target, chosen without
gradient). ``interest_scores`` and ``positive_scores`` apply the readout's pooling over K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from mirec.config import LossConfig
from mirec.data.batches import SeqBatch
from mirec.errors import ConfigError
from mirec.models.two_tower import TwoTower, max_interest_scores
from mirec.schema import PAD_ITEM_ID

Readout = Literal["max", "target_aware", "logsumexp"]


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


@dataclass(frozen=True)
class LossContext:
    """One batch's inputs to every objective term.

    ``user_vecs`` [P, K, D] and ``targets`` [P] are the batch's training rows
    (``training_rows``), computed once and shared by the main loss and the auxiliary terms.
    """

    model: TwoTower
    batch: SeqBatch
    cfg: LossConfig
    sampler: NegativeSampler | None
    generator: torch.Generator
    num_negatives: int
    user_vecs: torch.Tensor
    targets: torch.Tensor


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
    if mode in ("max", "logsumexp") or user_vecs.shape[1] == 1:
        return user_vecs
    if mode != "target_aware":
        raise ConfigError(f"loss.readout {mode!r} is not 'max', 'logsumexp' or 'target_aware'")
    with torch.no_grad():
        best = torch.einsum("bkd,bd->bk", user_vecs, target_vecs).argmax(dim=1)  # [B]
    rows = torch.arange(user_vecs.shape[0], device=user_vecs.device)
    return user_vecs[rows, best].unsqueeze(1)  # [B, 1, D]


def interest_scores(
    queries: torch.Tensor, items: torch.Tensor, mode: Readout, temperature: float = 1.0
) -> torch.Tensor:
    """Scores of every (row, item) pair pooled over the K query vectors.

    Args:
        queries: Tensor [P, K', D] from ``readout``.
        items: Tensor [M, D].
        mode: the readout; ``logsumexp`` pools by tau * logsumexp_k(s_k / tau), every other
            mode (and K' = 1) by the max, as serving does.
        temperature: tau of ``logsumexp``.

    Returns:
        Tensor [P, M].
    """
    if mode != "logsumexp" or queries.shape[1] == 1:
        return max_interest_scores(queries, items)
    scores = torch.einsum("pkd,md->pkm", queries, items)  # [P, K, M]
    return temperature * torch.logsumexp(scores / temperature, dim=1)


def positive_scores(
    queries: torch.Tensor, pos_vecs: torch.Tensor, mode: Readout, temperature: float = 1.0
) -> torch.Tensor:
    """Each row's score of its own positive, pooled over K as ``interest_scores`` does.

    Args:
        queries: Tensor [P, K', D]; pos_vecs: Tensor [P, D].

    Returns:
        Tensor [P].
    """
    scores = (queries * pos_vecs.unsqueeze(1)).sum(-1)  # [P, K']
    if mode == "logsumexp" and scores.shape[1] > 1:
        return temperature * torch.logsumexp(scores / temperature, dim=1)
    return scores.max(dim=1).values


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
