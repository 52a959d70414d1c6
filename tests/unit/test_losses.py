"""Losses: hand-checked softmax, logQ and accidental hits, readouts, and overfitting a toy set."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mirec.config import LossConfig, ModelConfig
from mirec.data.batches import SeqBatch, pad_left
from mirec.errors import ConfigError
from mirec.models import build_model
from mirec.models.item_tower import ItemTower
from mirec.models.two_tower import TwoTower
from mirec.objectives import (
    compute_loss,
    full_softmax_loss,
    readout,
    resolve_matmul_dtype,
    sampled_softmax_loss,
)
from mirec.objectives import full_softmax as full_softmax_module

torch.set_num_threads(1)


@dataclass(frozen=True)
class Draw:
    ids: torch.Tensor
    log_q: torch.Tensor


class FixedSampler:
    """Stand-in for mirec.data.samplers: always the same negatives, log q = log(id / 10)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = torch.tensor(ids)

    def log_q(self, item_ids: torch.Tensor) -> torch.Tensor:
        return torch.log(item_ids.float() / 10)

    def draw(self, num: int, generator: torch.Generator) -> Draw:
        return Draw(self.ids[:num], self.log_q(self.ids[:num]))


class UniformSampler:
    """Stand-in uniform sampler over 1..N."""

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def log_q(self, item_ids: torch.Tensor) -> torch.Tensor:
        return torch.full(item_ids.shape, -math.log(self.num_items))

    def draw(self, num: int, generator: torch.Generator) -> Draw:
        ids = torch.randint(1, self.num_items + 1, (num,), generator=generator)
        return Draw(ids, self.log_q(ids))


class FixedUserTower(torch.nn.Module):
    """Returns preset user vectors [B, K, D]."""

    def __init__(self, vecs: torch.Tensor) -> None:
        super().__init__()
        self.vecs = torch.nn.Parameter(vecs)
        self.num_interests = vecs.shape[1]

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        return self.vecs


def _hand_model(user_vecs: torch.Tensor, item_vecs: torch.Tensor) -> TwoTower:
    tower = ItemTower(item_vecs.shape[0] - 1, item_vecs.shape[1])
    with torch.no_grad():
        tower.embedding.weight.copy_(item_vecs)
    return TwoTower(tower, FixedUserTower(user_vecs))


ITEMS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]])  # PAD + 4
USERS = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 3.0], [1.0, 1.0]]])  # [B=2, K=2, D=2]
GEN = torch.Generator().manual_seed(0)


def _batch(targets: list[int]) -> SeqBatch:
    hist = pad_left([[1]] * len(targets), 5)
    return SeqBatch(hist, torch.ones(len(targets), dtype=torch.long), torch.tensor(targets))


def test_full_softmax_equals_cross_entropy_on_hand_logits() -> None:
    model = _hand_model(USERS, ITEMS)
    out = compute_loss(model, _batch([1, 4]), LossConfig(kind="full_softmax"), None, GEN, 0)
    # max over interests of <v_k, e_i> for items 1..4
    logits = torch.tensor([[2.0, 1.0, 2.0, 2.0], [1.0, 3.0, 3.0, 6.0]])
    assert out.total.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([0, 3])).item())
    assert set(out.parts) == {"full_softmax"}
    scaled = compute_loss(
        model, _batch([1, 4]), LossConfig(kind="full_softmax", temperature=0.5), None, GEN, 0
    )
    assert scaled.total.item() == pytest.approx(
        F.cross_entropy(logits / 0.5, torch.tensor([0, 3])).item()
    )


def test_target_aware_readout_uses_the_interest_closest_to_the_target() -> None:
    picked = readout(USERS, ITEMS[[1, 4]], "target_aware")  # row 0 -> v_0, row 1 -> v_0 (6 > 1)
    assert torch.equal(picked, torch.stack([USERS[0, :1], USERS[1, :1]]))
    model = _hand_model(USERS, ITEMS)
    out = compute_loss(model, _batch([1, 4]), LossConfig(readout="target_aware"), None, GEN, 0)
    logits = torch.stack([ITEMS[1:] @ USERS[0, 0], ITEMS[1:] @ USERS[1, 0]])
    assert out.total.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([0, 3])).item())
    assert torch.equal(readout(USERS, ITEMS[[1, 4]], "max"), USERS)


def test_logq_and_accidental_hits_on_a_hand_example() -> None:
    model = _hand_model(USERS, ITEMS)
    sampler = FixedSampler([2, 4, 1])  # item 4 is row 1's positive: an accidental hit
    cfg = LossConfig(kind="sampled_softmax", sampler="uniform")
    out = compute_loss(model, _batch([1, 4]), cfg, sampler, GEN, 3)
    lq = torch.log(torch.tensor([2.0, 4.0, 1.0]) / 10)
    row0 = torch.tensor([2.0 - math.log(0.1), 1.0 - lq[0], 2.0 - lq[1], float("-inf")])
    row1 = torch.tensor([6.0 - math.log(0.4), 3.0 - lq[0], float("-inf"), 1.0 - lq[2]])
    expected = F.cross_entropy(torch.stack([row0, row1]), torch.tensor([0, 0]))
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)
    # Without logQ and without masking: raw logits, the hit competes.
    cfg = LossConfig(kind="sampled_softmax", logq_correction=False, remove_accidental_hits=False)
    out = compute_loss(model, _batch([1, 4]), cfg, sampler, GEN, 3)
    raw = torch.tensor([[2.0, 1.0, 2.0, 2.0], [6.0, 3.0, 6.0, 1.0]])
    assert out.total.item() == pytest.approx(F.cross_entropy(raw, torch.tensor([0, 0])).item())


def test_sampled_softmax_loss_direct() -> None:
    queries = torch.tensor([[[1.0, 0.0]]])
    loss = sampled_softmax_loss(
        queries,
        torch.tensor([[2.0, 0.0]]),
        torch.tensor([[1.0, 0.0], [3.0, 0.0]]),
        pos_log_q=torch.tensor([0.5]),
        neg_log_q=torch.tensor([0.1, 0.2]),
        masked=torch.tensor([[False, True]]),
        temperature=2.0,
    )
    logits = torch.tensor([[1.0 - 0.5, 0.5 - 0.1]])
    assert loss.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([0])).item())
    full = full_softmax_loss(queries, ITEMS, torch.tensor([2]), 1.0)
    assert full.item() == pytest.approx(
        F.cross_entropy(ITEMS[1:] @ queries[0, 0], torch.tensor(1)).item()
    )


def test_full_softmax_gradients_match_torch_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    queries = torch.randn(6, 1, 4, generator=gen, requires_grad=True)
    items = torch.randn(9, 4, generator=gen, requires_grad=True)
    targets = torch.tensor([1, 8, 3, 3, 2, 7])
    loss = full_softmax_loss(queries, items, targets, 0.7)
    grads = torch.autograd.grad(loss, [queries, items])
    ref = F.cross_entropy((queries[:, 0] / 0.7) @ items[1:].T, targets - 1)
    ref_grads = torch.autograd.grad(ref, [queries, items])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("keep_probs", [True, False])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_chunked_full_softmax_matches_torch_across_chunks(
    dtype: torch.dtype, tol: float, keep_probs: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More rows than one chunk: the kept-softmax and the recomputed backward equal autograd's."""
    if not keep_probs:
        monkeypatch.setattr(full_softmax_module, "CE_KEEP_PROBS_MAX", 0)
    gen = torch.Generator().manual_seed(1)
    queries = torch.randn(300, 1, 8, generator=gen, requires_grad=True)
    items = torch.randn(50, 8, generator=gen, requires_grad=True)
    targets = torch.randint(1, 50, (300,), generator=gen)
    loss = full_softmax_loss(queries, items, targets, 1.0, matmul_dtype=dtype)
    grads = torch.autograd.grad(loss, [queries, items])
    ref = F.cross_entropy(queries[:, 0] @ items[1:].T, targets - 1)
    ref_grads = torch.autograd.grad(ref, [queries, items])
    assert loss.item() == pytest.approx(ref.item(), rel=tol)
    for got, want in zip(grads, ref_grads, strict=True):
        assert (got - want).abs().max() <= tol * want.abs().max()


def test_auto_matmul_dtype_is_bfloat16_only_with_native_units() -> None:
    assert resolve_matmul_dtype("float32") == torch.float32
    assert resolve_matmul_dtype("bfloat16") == torch.bfloat16
    caps = torch.cpu.get_capabilities()
    native = caps.get("avx512_bf16") or caps.get("amx_bf16")
    assert resolve_matmul_dtype("auto") == (torch.bfloat16 if native else torch.float32)


def test_in_batch_negatives_are_the_other_rows_positives() -> None:
    model = _hand_model(USERS, ITEMS)
    sampler = FixedSampler([1])
    cfg = LossConfig(kind="sampled_softmax", sampler="in_batch")
    out = compute_loss(model, _batch([1, 4]), cfg, sampler, GEN, 100)
    l1, l4 = math.log(0.1), math.log(0.4)
    logits = torch.tensor([[2.0 - l1, 2.0 - l4], [6.0 - l4, 1.0 - l1]])  # [own, other positive]
    assert out.total.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([0, 0])).item())


def test_sampled_loss_needs_a_sampler() -> None:
    model = _hand_model(USERS, ITEMS)
    with pytest.raises(ConfigError, match="sampler"):
        compute_loss(model, _batch([1, 4]), LossConfig(kind="sampled_softmax"), None, GEN, 3)


def test_causal_model_trains_at_every_real_position() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="sasrec", dim=8, dropout=0.0), 10, max_len=6).eval()
    hist = pad_left([[1, 2, 3], [4]], 6)  # [2, 3]
    pos = torch.tensor([[2, 3, 5], [0, 0, 6]])
    batch = SeqBatch(hist, torch.tensor([3, 1]), torch.tensor([5, 6]), pos_targets=pos)
    out = compute_loss(model, batch, LossConfig(), None, GEN, 0)
    states = model.sequence_states(batch)
    logits = states @ model.item_vectors()[1:].T  # [B, T, N]
    valid = pos != 0
    expected = F.cross_entropy(logits[valid], pos[valid] - 1)
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_batch_without_targets_gives_zero_loss() -> None:
    model = _hand_model(USERS, ITEMS)
    out = compute_loss(model, _batch([0, 0]), LossConfig(), None, GEN, 0)
    assert out.total.item() == 0.0
    out.total.backward()


def _toy_data() -> SeqBatch:
    """Three disjoint groups of 8 items; each user's history is 5 items of one group and the
    target is the group's first item."""
    gen = torch.Generator().manual_seed(0)
    hists, targets = [], []
    for u in range(48):
        first = 1 + (u % 3) * 8
        hists.append((first + 1 + torch.randperm(7, generator=gen)[:5]).tolist())
        targets.append(first)
    return SeqBatch(pad_left(hists, 10), torch.full((48,), 5), torch.tensor(targets))


LOSSES = {
    "full": LossConfig(kind="full_softmax"),
    "full_target_aware": LossConfig(kind="full_softmax", readout="target_aware"),
    "sampled": LossConfig(kind="sampled_softmax", sampler="uniform"),
    "in_batch": LossConfig(kind="sampled_softmax", sampler="in_batch"),
}


@pytest.mark.parametrize("name", ["sasrec", "comirec_sa", "comirec_dr", "mind"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_tiny_model_overfits_tiny_data(name: str, loss: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, dim=16, dropout=0.0), 24, max_len=10)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    batch, gen, sampler = _toy_data(), torch.Generator().manual_seed(0), UniformSampler(24)
    losses = []
    for _ in range(50):
        out = compute_loss(model, batch, LOSSES[loss], sampler, gen, 20)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(out.total.item())
    assert losses[-1] < 0.25 * losses[0], losses[::10]


@pytest.mark.parametrize("sampler_name", ["uniform", "popularity", "log_uniform", "in_batch"])
def test_with_the_real_samplers(sampler_name: str) -> None:
    from mirec.data.samplers import build_sampler

    torch.manual_seed(0)
    counts = np.r_[0, np.arange(24, 0, -1)]
    sampler = build_sampler(sampler_name, counts)
    model = build_model(ModelConfig(name="comirec_sa", dim=16), 24, max_len=10)
    cfg = LossConfig(kind="sampled_softmax", sampler=sampler_name)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        out = compute_loss(model, _toy_data(), cfg, sampler, gen, 32)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(out.total.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0], losses[::10]
