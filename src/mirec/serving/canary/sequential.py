"""The canary's statistical test: mSPRT with always-valid p-values on two click-through rates.

The mixture sequential probability ratio test (Johari, Pekelis and Walsh, "Peeking at A/B
tests", KDD 2017) compares the canary's CTR ``p_t`` with production's ``p_c``. With
``d = p_t - p_c`` and its estimated variance ``V = p_c(1-p_c)/n_c + p_t(1-p_t)/n_t``, the
difference is approximately N(theta, V); mixing the likelihood ratio over a N(0, tau^2) prior on
theta (fixed before the test) gives

    log Lambda = 1/2 log(V / (V + tau^2)) + tau^2 d^2 / (2 V (V + tau^2))

and the always-valid p-value ``p_n = min(p_{n-1}, 1 / Lambda_n)`` (``p_0 = 1``). Under H0
(no difference) the chance that ``p_n`` *ever* falls to ``alpha``, however often it is looked
at, is at most ``alpha`` (Ville's inequality on the mixture martingale), so the test may be
checked after every batch of traffic. A z-test re-run after every batch is not valid: its false
positive rate grows with the number of looks.

scipy supplies the normal quantiles of the per-arm Wilson intervals and of the fixed-horizon
z-test that is reported next to the mSPRT for comparison (never used to decide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm

from mirec.errors import ConfigError

DEFAULT_TAU2 = 1e-4  # prior variance of the CTR difference (tau = 1 CTR point)
DEFAULT_ALPHA = 0.05  # two-sided type I error over the whole, continuously monitored test


@dataclass(frozen=True, slots=True)
class MsprtResult:
    """One look of the test.

    Attributes:
        difference: ``p_t - p_c``, the canary's CTR minus production's.
        variance: ``V``, the estimated variance of the difference.
        log_lambda: log of the mixture likelihood ratio.
        p_value: ``min(1, 1 / Lambda)`` at this look (not yet minimised over looks).
        z_p_value: the fixed-horizon two-sided z-test's p-value (reported, never used).
    """

    difference: float
    variance: float
    log_lambda: float
    p_value: float
    z_p_value: float

    @property
    def likelihood_ratio(self) -> float:
        """Lambda."""
        return math.exp(self.log_lambda)


def _check_counts(clicks: int, impressions: int, arm: str) -> None:
    if impressions < 0 or clicks < 0:
        raise ConfigError(f"{arm}: counts must be >= 0, got {clicks} clicks / {impressions}")
    if clicks > impressions:
        raise ConfigError(f"{arm}: {clicks} clicks exceed {impressions} impressions")


def msprt(
    clicks_c: int, impressions_c: int, clicks_t: int, impressions_t: int, tau2: float = DEFAULT_TAU2
) -> MsprtResult:
    """The mSPRT statistic of control (production) against treatment (canary) at one look.

    Args:
        clicks_c: production's clicks.
        impressions_c: production's impressions.
        clicks_t: the canary's clicks.
        impressions_t: the canary's impressions.
        tau2: the prior variance of the difference, fixed before the test.

    Returns:
        The statistic; with no impressions in an arm, or no variance yet (no clicks at all),
        ``log_lambda`` is 0 and the p-value 1.

    Raises:
        ConfigError: negative counts, more clicks than impressions, or ``tau2 <= 0``.
    """
    if not tau2 > 0:
        raise ConfigError(f"tau2 must be > 0, got {tau2}")
    _check_counts(clicks_c, impressions_c, "production")
    _check_counts(clicks_t, impressions_t, "canary")
    if impressions_c == 0 or impressions_t == 0:
        return MsprtResult(0.0, 0.0, 0.0, 1.0, 1.0)
    p_c, p_t = clicks_c / impressions_c, clicks_t / impressions_t
    variance = p_c * (1 - p_c) / impressions_c + p_t * (1 - p_t) / impressions_t
    d = p_t - p_c
    if variance <= 0:
        return MsprtResult(d, 0.0, 0.0, 1.0, 1.0)
    log_lambda = 0.5 * math.log(variance / (variance + tau2)) + tau2 * d * d / (
        2 * variance * (variance + tau2)
    )
    p_value = 1.0 if log_lambda <= 0 else min(1.0, math.exp(-log_lambda))
    z_p = float(2 * norm.sf(abs(d) / math.sqrt(variance)))
    return MsprtResult(d, variance, log_lambda, p_value, z_p)


@dataclass(frozen=True, slots=True)
class Interval:
    """A two-sided confidence interval of a rate."""

    low: float
    high: float


def wilson_interval(clicks: int, impressions: int, level: float = 0.95) -> Interval:
    """Wilson score interval of ``clicks / impressions`` (fixed-horizon; for display).

    Raises:
        ConfigError: bad counts or a level outside (0, 1).
    """
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    _check_counts(clicks, impressions, "arm")
    if impressions == 0:
        return Interval(0.0, 1.0)
    z = float(norm.ppf(0.5 + level / 2))
    n, p = impressions, clicks / impressions
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


class SequentialTest:
    """The running mSPRT: every ``look`` folds new counts into the always-valid p-value.

    Args:
        tau2: prior variance of the CTR difference.
        alpha: the error rate; ``significant`` once the always-valid p-value is <= alpha.
        p_value: the running p-value to resume from (1 for a new test).
    """

    def __init__(
        self, tau2: float = DEFAULT_TAU2, alpha: float = DEFAULT_ALPHA, p_value: float = 1.0
    ) -> None:
        if not 0 < alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
        if not 0 <= p_value <= 1:
            raise ConfigError(f"a resumed p-value must be in [0, 1], got {p_value}")
        self.tau2 = tau2
        self.alpha = alpha
        self.p_value = p_value
        self.direction = 0  # sign of the difference at the look that crossed alpha
        self.last: MsprtResult | None = None

    def look(self, clicks_c: int, impressions_c: int, clicks_t: int, impressions_t: int) -> float:
        """Update with the cumulative counts of both arms; returns the always-valid p-value."""
        self.last = msprt(clicks_c, impressions_c, clicks_t, impressions_t, self.tau2)
        crossed = not self.significant and self.last.p_value <= self.alpha
        self.p_value = min(self.p_value, self.last.p_value)
        if crossed:
            self.direction = 1 if self.last.difference > 0 else -1
        return self.p_value

    @property
    def significant(self) -> bool:
        """Whether the test has rejected "no difference" at level ``alpha``."""
        return self.p_value <= self.alpha
