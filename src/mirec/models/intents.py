"""ELCRec's learnable intent centres (Liu et al., NeurIPS 2024) and the grouping of users by them.

The centres are model parameters, so they train with the towers, travel in the bundle's
user-tower file and group users afterwards (``user_intents``). They start as the spherical
k-means centres of the users' behaviour vectors after a warm-up (``initialise``; ELCRec's code
does the same with faiss k-means, 20 iterations and the best of 5 starts, at epoch 0). A user's
behaviour vector is the mean of its K interest vectors (the user vector itself for K = 1);
every distance is taken between L2-normalised vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mirec.data.batches import SeqBatch
from mirec.errors import ConfigError, DataValidationError
from mirec.models.item_tower import EMBED_INIT_STD
from mirec.models.two_tower import TwoTower

KMEANS_ITERS = 20
KMEANS_RESTARTS = 5  # ELCRec runs faiss k-means with niter 20, nredo 5


class IntentCentres(nn.Module):
    """k learnable centres [k, D] and whether k-means has set them yet.

    Args:
        num_intents: k >= 2.
        dim: D.

    Raises:
        ConfigError: k < 2 (the separation term needs two centres).
    """

    def __init__(self, num_intents: int, dim: int) -> None:
        super().__init__()
        if num_intents < 2:
            raise ConfigError(f"model.num_intents must be 0 (off) or >= 2, got {num_intents}")
        self.centres = nn.Parameter(torch.randn(num_intents, dim) * EMBED_INIT_STD)
        self.initialised: torch.Tensor
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @property
    def ready(self) -> bool:
        """True once ``initialise`` has run (the clustering terms wait for it)."""
        return bool(self.initialised.item())

    def normalised(self) -> torch.Tensor:
        """The unit-length centres, [k, D]."""
        return F.normalize(self.centres, dim=-1)

    def assign(self, behaviour: torch.Tensor) -> torch.Tensor:
        """The nearest centre of each normalised behaviour vector [B, D]: LongTensor [B]."""
        sims = F.normalize(behaviour, dim=-1) @ self.normalised().T  # [B, k]
        return sims.argmax(dim=1)

    @torch.no_grad()
    def initialise(self, behaviour: torch.Tensor, generator: torch.Generator) -> None:
        """Set the centres to the spherical k-means centres of ``behaviour`` [U, D]."""
        self.centres.copy_(spherical_kmeans(behaviour, self.centres.shape[0], generator))
        self.initialised.fill_(True)


def spherical_kmeans(
    points: torch.Tensor,
    k: int,
    generator: torch.Generator,
    iters: int = KMEANS_ITERS,
    restarts: int = KMEANS_RESTARTS,
) -> torch.Tensor:
    """k-means on the unit sphere (cosine similarity): the best of ``restarts`` runs, each
    seeded from k distinct random points (best = the highest summed cosine to the nearest centre).

    An emptied cluster restarts at the point farthest from every centre.

    Args:
        points: Tensor [U, D]; normalised here.
        k: number of centres.
        generator: RNG of the seeding.
        iters: assignment / update rounds of each run.
        restarts: number of runs.

    Returns:
        Unit-length centres, Tensor [k, D].

    Raises:
        DataValidationError: fewer than k points.
    """
    if points.shape[0] < k:
        raise DataValidationError(f"k-means with {k} intents needs >= {k} users, got {len(points)}")
    x = F.normalize(points.float(), dim=-1)  # [U, D]
    runs = [_kmeans_run(x, k, generator, iters) for _ in range(max(1, restarts))]
    fits = [float((x @ c.T).max(dim=1).values.sum()) for c in runs]
    return runs[max(range(len(runs)), key=fits.__getitem__)]


def _kmeans_run(x: torch.Tensor, k: int, generator: torch.Generator, iters: int) -> torch.Tensor:
    """One spherical k-means run on unit rows ``x`` [U, D]: centres [k, D]."""
    pick = torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)
    centres = x[pick].clone()  # [k, D]
    for _ in range(iters):
        sims = x @ centres.T  # [U, k]
        owner = sims.argmax(dim=1)  # [U]
        sums = torch.zeros_like(centres).index_add_(0, owner, x)  # [k, D]
        counts = torch.bincount(owner, minlength=k)  # [k]
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            far = int(sims.max(dim=1).values.argmin())
            sums[empty], sims[far] = x[far], float("inf")
        centres = F.normalize(sums, dim=-1)
    return centres


def behaviour_vectors(user_vecs: torch.Tensor) -> torch.Tensor:
    """A user's behaviour vector for the clustering terms: the mean of [B, K, D] over K, [B, D]."""
    return user_vecs.mean(dim=1)


def intent_centres(model: TwoTower) -> IntentCentres | None:
    """The model's intent centres (``model.num_intents`` > 0), else None."""
    centres = getattr(model.user_tower, "intents", None)
    return centres if isinstance(centres, IntentCentres) else None


@torch.no_grad()
def user_intents(model: TwoTower, batch: SeqBatch) -> torch.Tensor:
    """The intent id (nearest centre) of every history in ``batch``: LongTensor [B].

    Raises:
        ConfigError: the model has no intent centres, or they were never initialised.
    """
    centres = intent_centres(model)
    if centres is None or not centres.ready:
        raise ConfigError("this model has no trained intent centres (train with model.num_intents)")
    return centres.assign(behaviour_vectors(model.user_vectors(batch)))
