"""The canary's pure parts: the mSPRT against hand-computed values, the sticky split, the policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mirec.errors import ConfigError
from mirec.serving.canary.policy import ArmHealth, PolicyConfig, decide, tripped
from mirec.serving.canary.sequential import SequentialTest, msprt, wilson_interval
from mirec.serving.canary.split import BUCKETS, SplitStore, assign_variant, bucket
from mirec.serving.canary.tracker import Counts


def test_msprt_matches_the_hand_computed_example() -> None:
    # 300/10,000 vs 360/10,000, tau^2 = 1e-4: V = 0.03*0.97/1e4 + 0.036*0.964/1e4 = 6.3804e-6,
    # log L = 0.5*log(V/(V+tau2)) + tau2*d^2/(2V(V+tau2)) = -1.40692 + 2.65196 = 1.24504.
    result = msprt(300, 10_000, 360, 10_000, tau2=1e-4)
    assert result.variance == pytest.approx(6.3804e-6, rel=1e-9)
    assert result.log_lambda == pytest.approx(1.24504, abs=1e-5)
    assert result.likelihood_ratio == pytest.approx(3.47, abs=0.005)
    assert result.p_value == pytest.approx(0.288, abs=0.0005)
    assert result.z_p_value == pytest.approx(0.0175, abs=0.0001)  # what a fixed z-test says


def test_msprt_is_symmetric_and_refuses_bad_counts() -> None:
    up, down = msprt(300, 10_000, 360, 10_000), msprt(360, 10_000, 300, 10_000)
    assert up.log_lambda == pytest.approx(down.log_lambda)
    assert up.difference == pytest.approx(-down.difference)
    assert msprt(0, 0, 5, 100).p_value == 1.0
    with pytest.raises(ConfigError, match="exceed"):
        msprt(11, 10, 1, 10)
    with pytest.raises(ConfigError, match="tau2"):
        msprt(1, 10, 1, 10, tau2=0)


def test_always_valid_p_value_is_the_minimum_over_looks() -> None:
    test = SequentialTest(tau2=1e-4, alpha=0.05)
    first = test.look(300, 10_000, 360, 10_000)
    assert first == pytest.approx(0.288, abs=0.0005)
    later = test.look(600, 20_000, 600, 20_000)  # the difference vanished
    assert later == first  # the running minimum never goes back up
    assert not test.significant
    test.look(600, 20_000, 800, 20_000)
    assert test.significant and test.direction == 1


def test_wilson_interval_hand_computed() -> None:
    band = wilson_interval(300, 10_000)
    # z = 1.959964; centre = (0.03 + z^2/2e4) / (1 + z^2/1e4); half-width by the same formula
    assert (band.low, band.high) == pytest.approx((0.026833, 0.033528), abs=1e-6)
    assert wilson_interval(0, 0).high == 1.0


def test_a_a_false_decisions_stay_under_alpha_with_many_looks() -> None:
    rng = np.random.default_rng(7)
    runs, looks, per_look, ctr = 400, 50, 500, 0.03
    wrong = 0
    for _ in range(runs):
        test = SequentialTest(tau2=1e-4, alpha=0.05)
        c = rng.binomial(per_look, ctr, size=(looks, 2)).cumsum(axis=0)
        for step in range(looks):
            n = per_look * (step + 1)
            test.look(int(c[step, 0]), n, int(c[step, 1]), n)
            if test.significant:
                wrong += 1
                break
    assert wrong / runs <= 0.05  # a z-test checked 50 times rejects ~30% of these runs


def test_split_is_sticky_salted_and_monotone_in_the_weight(tmp_path) -> None:
    store = SplitStore(tmp_path, default_weight=0.2)
    first = store.load()
    again = SplitStore(tmp_path).load()  # a restart reads the same salt and weight
    assert again == first
    users = [f"u{i}" for i in range(5_000)]
    arms = [assign_variant(u, first.weight, first.salt) for u in users]
    assert arms == [assign_variant(u, again.weight, again.salt) for u in users]
    share = arms.count("canary") / len(users)
    assert abs(share - 0.2) < 0.03
    wider = store.set_weight(0.5)
    assert wider.salt == first.salt
    for user, arm in zip(users, arms, strict=True):
        if arm == "canary":  # raising the weight never moves a canary user back
            assert assign_variant(user, wider.weight, wider.salt) == "canary"
    other = [assign_variant(u, 0.2, "another-salt") for u in users]
    assert other != arms
    assert 0 <= bucket("u1", first.salt) < BUCKETS
    with pytest.raises(ConfigError, match="weight"):
        store.set_weight(1.5)


def _decide(prod: Counts, canary: Counts, health: ArmHealth = ArmHealth(), **cfg: float) -> str:
    config = PolicyConfig(**cfg)  # type: ignore[arg-type]
    test = SequentialTest(config.tau2, config.alpha)
    return decide(("v1", "v2"), (prod, canary), (ArmHealth(), health), test, config).decision


def test_policy_holds_promotes_and_rolls_back() -> None:
    assert _decide(Counts(1_000, 30), Counts(1_000, 60)) == "hold"  # below min impressions
    assert _decide(Counts(20_000, 600), Counts(20_000, 900)) == "promote"
    assert _decide(Counts(20_000, 600), Counts(20_000, 300)) == "rollback"
    assert _decide(Counts(20_000, 600), Counts(20_000, 610)) == "hold"
    broken = ArmHealth(requests=100, errors=5, fallbacks=0, p99_ms=5.0)
    assert _decide(Counts(10, 1), Counts(10, 1), broken) == "rollback"  # guardrail first


def test_guardrails_name_what_tripped() -> None:
    values = {"canary_requests": 100.0, "canary_error_rate": 0.0, "canary_p99_ms": 80.0,
              "canary_fallback_rate": 0.2}  # fmt: skip
    limits = {"min_guardrail_requests": 50.0, "max_error_rate": 0.01, "max_p99_ms": 50.0,
              "max_fallback_rate": 0.05}  # fmt: skip
    reasons = tripped(values, limits)
    assert len(reasons) == 2 and "p99" in reasons[0] and "fallback" in reasons[1]
    assert tripped({**values, "canary_requests": 10.0}, limits) == []
    assert math.isclose(ArmHealth(10, 1, 0, 0.0).rate(1), 0.1)
