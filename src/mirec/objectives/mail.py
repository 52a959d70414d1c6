"""MAIL's zero-shot objective and its co-training beside the ranking tower (seed 001).

On warm users: L = L_align + L_behaviour + L_profile + L_rank, with L_align = MSE(z_s, z_b),
L_behaviour = MSE(D_b(z_s), x_b) + MSE(D_b(z_b), x_b) (cross and self reconstruction of the
interest vectors), L_profile = BCE(D_s(z_s), m) + BCE(D_s(z_b), m) over the multi-hot
profile m (unit weights, as MAIL's code) and L_rank = the full-softmax cross-entropy of the
batch's next items under the virtual vectors D_b(z_s), scored by max over interests against the
(detached) item vectors, as a cold user is served. MAIL's code has no L_rank: there the ranking
tower reads the virtual behaviour through its own trained layers, while here the virtual vectors
*are* what is scored, and reconstruction alone regresses them to the blurred mean of a profile
group's interest vectors (measured: below popularity at 0 events, docs/methods.md).
``ZeroShotTrainer`` runs it on every training batch of the ranking tower with its own Adam, on
a detached copy of the tower's output and item vectors: the zero-shot tower follows the ranking
tower's space and never back-propagates into it (MAIL's two train ops).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mirec.config import ZeroShotConfig
from mirec.data.batches import SeqBatch, pad_left
from mirec.errors import ConfigError
from mirec.models.mail import ZeroShotTower
from mirec.models.two_tower import TwoTower, max_interest_scores
from mirec.objectives.base import LossOutput
from mirec.schema import PAD_ITEM_ID


def zero_shot_terms(
    z_profile: torch.Tensor,
    z_behaviour: torch.Tensor,
    behaviour: torch.Tensor,
    behaviour_from: tuple[torch.Tensor, torch.Tensor],
    profile_logits_from: tuple[torch.Tensor, torch.Tensor],
    profile_multi_hot: torch.Tensor,
) -> LossOutput:
    """MAIL's three terms from the encoders' and decoders' outputs.

    Args:
        z_profile: Tensor [B, H], the profile latent z_s.
        z_behaviour: Tensor [B, H], the behaviour latent z_b.
        behaviour: Tensor [B, K*D] (or [B, K, D]), the ranking tower's vectors x_b.
        behaviour_from: (D_b(z_s), D_b(z_b)), shaped like ``behaviour``.
        profile_logits_from: (D_s(z_s), D_s(z_b)), logits [B, V].
        profile_multi_hot: Tensor [B, V] of 0/1 profile targets m.

    Returns:
        LossOutput with parts ``align``, ``behaviour``, ``profile``; total = their sum.
    """
    align = F.mse_loss(z_profile, z_behaviour)
    rec_b = sum(F.mse_loss(r, behaviour) for r in behaviour_from)
    rec_s = sum(
        F.binary_cross_entropy_with_logits(r, profile_multi_hot) for r in profile_logits_from
    )
    assert isinstance(rec_b, torch.Tensor) and isinstance(rec_s, torch.Tensor)
    total = align + rec_b + rec_s
    parts = {"align": align.detach(), "behaviour": rec_b.detach(), "profile": rec_s.detach()}
    return LossOutput(total=total, parts=parts)


def multi_hot(tokens: torch.Tensor, width: int) -> torch.Tensor:
    """[B, P] hashed tokens (0 = none) -> float [B, width] with 1 at each token (column 0 = 0)."""
    out = torch.zeros(tokens.shape[0], width)
    out.scatter_(1, tokens, 1.0)
    out[:, 0] = 0.0
    return out


def virtual_rank_loss(
    virtual: torch.Tensor, item_vecs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Full-softmax CE of ``targets`` [B] under virtual interests [B, K, D] (max over K).

    ``item_vecs`` [N+1, D] is detached (the item tower gets no gradient); PAD is never a
    candidate, and rows whose target is PAD are left out.
    """
    scores = max_interest_scores(virtual, item_vecs.detach())  # [B, N+1]
    scores[:, PAD_ITEM_ID] = float("-inf")
    return F.cross_entropy(scores, targets, ignore_index=PAD_ITEM_ID)


def zero_shot_loss(
    tower: ZeroShotTower,
    profiles: torch.Tensor,
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
) -> LossOutput:
    """MAIL's loss for warm users with hashed ``profiles`` [B, P] and interests [B, K, D].

    ``user_vecs`` (and ``item_vecs``) are detached here: the ranking tower gets no gradient
    from this loss. With ``item_vecs`` [N+1, D] and the rows' next items ``targets`` [B]
    (no PAD), L_rank (``virtual_rank_loss`` of D_b(z_s)) is added as the part ``rank``.
    """
    target = user_vecs.detach()
    z_s, z_b = tower.encode_profile(profiles), tower.encode_behaviour(target)
    virtual = tower.decode_behaviour(z_s)
    out = zero_shot_terms(
        z_s,
        z_b,
        target,
        (virtual, tower.decode_behaviour(z_b)),
        (tower.decode_profile(z_s), tower.decode_profile(z_b)),
        multi_hot(profiles, tower.cfg.profile_buckets + 1),
    )
    if item_vecs is None or targets is None:
        return out
    rank = virtual_rank_loss(virtual, item_vecs, targets)
    return LossOutput(total=out.total + rank, parts=out.parts | {"rank": rank.detach()})


class ZeroShotTrainer:
    """Trains the zero-shot tower on every training forward pass of the user tower.

    Registered as a forward hook of the user tower: in training mode it takes the tower's
    output [B, K, D] for the batch's rows (``batch.user_idx`` = rows of the training users),
    detaches it and takes one Adam step of the zero-shot loss on the zero-shot tower only. The
    rows with a next item also score it under their virtual vectors (L_rank) against the
    tower's detached item vectors (``item_tower`` of the user tower).

    Args:
        tower: the zero-shot tower.
        profiles: LongTensor [U_train, P] hashed profiles of the training users, in split order.
        cfg: its config (``lr``).
    """

    def __init__(self, tower: ZeroShotTower, profiles: torch.Tensor, cfg: ZeroShotConfig) -> None:
        self.tower, self.profiles = tower, profiles
        self.opt = torch.optim.Adam(tower.parameters(), lr=cfg.lr)
        self.last: LossOutput | None = None

    def __call__(self, module: nn.Module, inputs: tuple[object, ...], output: torch.Tensor) -> None:
        """The forward hook: one zero-shot step per training batch of the ranking tower."""
        if not module.training or not torch.is_grad_enabled():
            return
        batch = inputs[0]
        if not isinstance(batch, SeqBatch) or batch.user_idx is None:
            raise ConfigError("zero-shot training needs SeqBatch rows with user_idx")
        rows = batch.hist_len > 0
        if not bool(rows.any()):
            return
        profiles = self.profiles[batch.user_idx[rows].cpu()].to(output.device)
        targets = batch.target_item_ids[rows]
        items = getattr(module, "item_tower", None)
        if items is None or not bool((targets != PAD_ITEM_ID).any()):
            out = zero_shot_loss(self.tower, profiles, output[rows])
        else:
            with torch.no_grad():
                item_vecs = items.all_items()
            out = zero_shot_loss(self.tower, profiles, output[rows], item_vecs, targets)
        self.opt.zero_grad(set_to_none=True)
        out.total.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.last = out


def user_rank_loss(
    virtual: torch.Tensor, item_vecs: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """Mean CE of every item a user has under their virtual interests (max over K).

    Args:
        virtual: Tensor [B, K, D]; item_vecs: Tensor [N+1, D] (detached here).
        items: float [B, N+1] multi-hot of each user's items (the PAD column is ignored).
    """
    scores = max_interest_scores(virtual, item_vecs.detach())  # [B, N+1]
    scores[:, PAD_ITEM_ID] = float("-inf")
    items = items.clone()
    items[:, PAD_ITEM_ID] = 0.0
    logp = F.log_softmax(scores, dim=1).masked_fill(items == 0, 0.0)
    return -(logp.sum(1) / items.sum(1).clamp(min=1)).mean()


@dataclass(frozen=True)
class RefitTargets:
    """What the zero-shot refit fits against: the frozen ranking tower, read once.

    The ranking tower does not change while the zero-shot tower is refitted, so its vectors
    are computed once per refit, not once per chunk of epochs.

    Attributes:
        user_vecs: Tensor [U, K, D] its interest vectors of every training user's whole sequence.
        hot: float [U, N+1] the multi-hot of each user's items (PAD column 0).
        item_vecs: Tensor [N+1, D] its item vectors.
    """

    user_vecs: torch.Tensor
    hot: torch.Tensor
    item_vecs: torch.Tensor

    @classmethod
    @torch.no_grad()
    def of(
        cls, model: TwoTower, sequences: list[torch.Tensor], max_len: int, batch_size: int = 256
    ) -> RefitTargets:
        """Read the trained model (put in evaluation mode) on the training users' sequences."""
        model.eval()
        item_vecs = model.item_vectors()
        vecs, hot = [], torch.zeros(len(sequences), int(item_vecs.shape[0]))
        for lo in range(0, len(sequences), batch_size):
            chunk = sequences[lo : lo + batch_size]
            hist = pad_left([s.numpy() for s in chunk], max_len)
            batch = SeqBatch(
                hist, (hist != PAD_ITEM_ID).sum(1), torch.zeros(len(chunk), dtype=torch.long)
            )
            vecs.append(model.user_vectors(batch))
        for row, seq in enumerate(sequences):
            hot[row, seq] = 1.0
        hot[:, PAD_ITEM_ID] = 0.0
        return cls(torch.cat(vecs), hot, item_vecs)


def fit_zero_shot(
    tower: ZeroShotTower,
    targets: RefitTargets,
    profiles: torch.Tensor,
    epochs: int,
    lr: float,
    seed: int = 0,
    batch_size: int = 256,
    token_drop: float = 0.0,
) -> list[float]:
    """More epochs of the zero-shot loss on the trained (frozen) ranking tower, one row per user.

    Co-training gives the zero-shot tower one step per ranking batch, against a ranking space
    that keeps moving; this refit aligns it with the space that is served. Each row is a
    training user: x_b = the ranking tower's vectors of their whole sequence (no gradient:
    MAIL's stop-gradient), L_rank over all of their items (``user_rank_loss``) in place of the
    next item. Only the zero-shot tower changes; call it in chunks of epochs on the same
    ``targets`` and keep the best on validation.

    Args:
        tower: the trained model's zero-shot tower.
        targets: ``RefitTargets.of`` the trained model, rows aligned with ``profiles``.
        profiles: LongTensor [U, P] hashed profiles.
        epochs, lr, seed, batch_size: the fit's schedule (Adam).
        token_drop: share of each row's profile tokens hidden in every step (the partial and
            the empty profile then decode too: a learned back-off, as demographic popularity
            backs off to each field; an empty profile decodes the training users' mean).

    Returns:
        The mean loss of every epoch.
    """
    opt = torch.optim.Adam(tower.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    width = tower.cfg.profile_buckets + 1
    user_vecs, num_users = targets.user_vecs, int(targets.user_vecs.shape[0])
    losses = []
    tower.train()
    for _ in range(epochs):
        order = torch.randperm(num_users, generator=generator)
        total = 0.0
        for lo in range(0, num_users, batch_size):
            rows = order[lo : lo + batch_size]
            tokens = profiles[rows]
            if token_drop > 0:  # a profile seen in part must still decode (back-off)
                keep = torch.rand(tokens.shape, generator=generator) >= token_drop
                tokens = tokens * keep
            z_s, z_b = tower.encode_profile(tokens), tower.encode_behaviour(user_vecs[rows])
            virtual = tower.decode_behaviour(z_s)
            terms = zero_shot_terms(
                z_s,
                z_b,
                user_vecs[rows],
                (virtual, tower.decode_behaviour(z_b)),
                (tower.decode_profile(z_s), tower.decode_profile(z_b)),
                multi_hot(tokens, width),
            )
            loss = terms.total + user_rank_loss(virtual, targets.item_vecs, targets.hot[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / max(num_users, 1))
    tower.eval()
    return losses
