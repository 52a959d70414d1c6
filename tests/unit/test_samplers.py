"""Negative samplers: normalised log_q, draws never PAD, frequencies that follow log_q."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirec.data.samplers import (
    SAMPLERS,
    LogUniformSampler,
    PopularitySampler,
    build_sampler,
    log_uniform_probs,
)
from mirec.errors import ConfigError

COUNTS = np.array([0, 50, 0, 7, 300, 1, 1, 20, 0, 3], dtype=np.int64)  # N = 9
ALL = torch.arange(1, len(COUNTS))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_log_q_is_a_distribution_over_all_items(name: str) -> None:
    sampler = build_sampler(name, COUNTS)
    log_q = sampler.log_q(ALL)
    assert log_q.shape == (9,) and torch.isfinite(log_q).all()
    assert float(log_q.double().exp().sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(sampler.log_q(torch.tensor([0]))[0]) == 0.0  # PAD: finite placeholder


@pytest.mark.parametrize("name", ["uniform", "popularity", "log_uniform"])
def test_draws_follow_log_q_and_never_pad(name: str) -> None:
    sampler = build_sampler(name, COUNTS)
    draw = sampler.draw(200_000, torch.Generator().manual_seed(0))
    assert draw.ids.dtype == torch.int64 and draw.ids.shape == (200_000,)
    assert int(draw.ids.min()) >= 1 and int(draw.ids.max()) <= 9
    assert torch.equal(draw.log_q, sampler.log_q(draw.ids))
    freq = torch.bincount(draw.ids, minlength=10)[1:].double() / 200_000
    assert torch.allclose(freq, sampler.log_q(ALL).double().exp(), atol=0.005)


def test_draws_are_reproducible() -> None:
    sampler = build_sampler("popularity", COUNTS)
    a = sampler.draw(50, torch.Generator().manual_seed(3)).ids
    b = sampler.draw(50, torch.Generator().manual_seed(3)).ids
    assert torch.equal(a, b)


def test_popularity_is_smoothed_count_to_the_power() -> None:
    q = PopularitySampler(COUNTS, power=0.5).log_q(ALL).double().exp().numpy()
    expected = (COUNTS[1:] + 1.0) ** 0.5
    assert np.allclose(q, expected / expected.sum())


def test_log_uniform_is_zipfian_over_popularity_rank() -> None:
    probs = log_uniform_probs(COUNTS)
    # ranks: 4 (300) -> 0, 1 (50) -> 1, 7 (20) -> 2, 3 (7) -> 3, 9 (3) -> 4, 5, 6 (1) -> 5, 6, ...
    rank_of = {4: 0, 1: 1, 7: 2, 3: 3, 9: 4, 5: 5, 6: 6, 2: 7, 8: 8}
    for item, rank in rank_of.items():
        assert probs[item] == pytest.approx(np.log((rank + 2) / (rank + 1)) / np.log(10))
    q = LogUniformSampler(COUNTS).log_q(torch.tensor([4, 1, 8])).exp()
    assert q[0] > q[1] > q[2]


def test_in_batch_draws_nothing_and_unknown_names_fail() -> None:
    draw = build_sampler("in_batch", COUNTS).draw(10, torch.Generator())
    assert draw.ids.numel() == 0 and draw.log_q.numel() == 0
    with pytest.raises(ConfigError, match="unknown sampler 'nope'"):
        build_sampler("nope", COUNTS)
    with pytest.raises(ConfigError):
        build_sampler("uniform", np.array([0]))
