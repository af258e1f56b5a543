"""Interval estimates over seeds: the stratified bootstrap of Agarwal et al., "Deep Reinforcement Learning at
the Edge of the Statistical Precipice" (NeurIPS 2021), with percentile intervals as in their `rliable`.

Runs (seeds) are resampled with replacement *within* each stratum (a task: here one setting such as a data
fraction), the aggregate is computed over the pooled resample, and the interval is the 2.5th-97.5th percentile
of the bootstrap distribution. `scipy.stats.bootstrap` with one data sample per stratum does exactly this: it
resamples each sample independently. (`rliable` itself needs `arch`, whose current release does not import
with pandas 3, which Ray installs here.)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end), as rliable defines it."""
    return stats.trim_mean(x, 0.25, axis=axis)


AGGREGATES = {"mean": np.mean, "median": np.median, "iqm": iqm}


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval (nan bounds: too few runs for an interval)."""

    value: float
    lo: float
    hi: float
    n: int

    def excludes(self, x: float) -> int:
        """+1 if the whole interval lies above x, -1 if below, 0 if it contains x or is undefined."""
        if math.isnan(self.lo) or math.isnan(self.hi):
            return 0
        return 1 if self.lo > x else -1 if self.hi < x else 0


def _clean(strata: list[np.ndarray]) -> list[np.ndarray]:
    out = [np.asarray(s, dtype=float) for s in strata]
    return [s[~np.isnan(s)] for s in out if np.any(~np.isnan(s))]


def stratified_interval(strata: list[np.ndarray], aggregate: str, reps: int = 2000, seed: int = 0) -> Estimate:
    """`aggregate` (mean | median | iqm) of the pooled runs, with a stratified-bootstrap 95% interval.

    A stratum with a single run cannot be resampled; it enters every resample unchanged. With fewer than two
    runs in every stratum there is no interval (nan bounds)."""
    strata = _clean(strata)
    fn = AGGREGATES[aggregate]
    if not strata:
        return Estimate(math.nan, math.nan, math.nan, 0)
    pooled = np.concatenate(strata)
    value = float(fn(pooled))
    varying = [s for s in strata if s.size >= 2]
    fixed = np.concatenate([s for s in strata if s.size < 2] or [np.zeros(0)])
    if not varying:
        return Estimate(value, math.nan, math.nan, pooled.size)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        batch = samples[0].shape[:-1]
        parts = [*samples, np.broadcast_to(fixed, (*batch, fixed.size))]
        return fn(np.concatenate(parts, axis=-1), axis=-1)

    lo, hi = _bootstrap(tuple(varying), statistic, reps, seed, paired=False)
    return Estimate(value, lo, hi, pooled.size)


def probability_of_improvement(pairs: list[tuple[np.ndarray, np.ndarray]], reps: int = 2000,
                               seed: int = 0) -> Estimate:  # fmt: skip
    """P(X better than Y) for lower-is-better scores paired run by run (same seed and condition): the fraction
    of pairs with x < y, ties counting one half, pooled over strata; its interval by the stratified bootstrap of
    the pairs. (Agarwal et al. compare independent runs, mean_ij [x_i < y_j]; here runs are paired by seed,
    which controls initialisation and data order, so the pairing is used, as for the mean difference.)"""
    wins = []
    for x, y in pairs:
        x, y = np.asarray(x, float), np.asarray(y, float)
        keep = ~(np.isnan(x) | np.isnan(y))
        wins.append((x[keep] < y[keep]) + 0.5 * (x[keep] == y[keep]))
    return stratified_interval(wins, "mean", reps, seed)


def _bootstrap(data: tuple[np.ndarray, ...], statistic, reps: int, seed: int, paired: bool) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (all-equal) resamples are fine for percentile intervals
        res = stats.bootstrap(data, statistic, n_resamples=reps, vectorized=True, axis=-1, paired=paired,
                              confidence_level=CONFIDENCE, method="percentile",
                              rng=np.random.default_rng(seed))  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def sign_test(diffs: list[np.ndarray]) -> float:
    """Two-sided exact sign test of paired differences (ties dropped): the p-value of as lopsided a split of
    wins and losses under "either is as likely to win". 1.0 when there is nothing to test."""
    d = np.concatenate([np.asarray(x, float) for x in diffs] or [np.zeros(0)])
    d = d[~np.isnan(d) & (d != 0)]
    if not d.size:
        return 1.0
    return float(stats.binomtest(int((d < 0).sum()), int(d.size), 0.5).pvalue)


ALPHA = 0.05


def verdict(diff: Estimate, poi: Estimate, p_sign: float) -> str:
    """helped / hurt / indistinguishable (strategy - baseline, lower is better). "helped" needs all three: the
    mean difference's interval below 0, the probability of improvement's interval above 0.5, and the exact sign
    test of the paired differences at p < 0.05 (percentile-bootstrap intervals of a handful of seeds are too
    narrow on their own: with 3 seeds the sign test can never get there, 6 seeds all better can). "hurt" is
    the mirror image; anything else is indistinguishable."""
    if p_sign < ALPHA and diff.excludes(0.0) < 0 and poi.excludes(0.5) > 0:
        return "helped"
    if p_sign < ALPHA and diff.excludes(0.0) > 0 and poi.excludes(0.5) < 0:
        return "hurt"
    return "indistinguishable"
