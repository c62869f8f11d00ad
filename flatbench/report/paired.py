"""Paired tests of two attacks on the same images, and what they could have seen.

Pure functions of counts and per-image differences:

- :func:`mcnemar_mde`: the smallest difference in ASR that McNemar's exact test detects with 80%
  power at a given level, for a row's number of pairs and its discordance;
- :func:`sign_flip_p`: the exact paired sign-flip (permutation) test of a mean difference whose
  per-image values are multiples of one unit (a fraction of K targets, averaged over S seeds);
- :func:`bootstrap_mean_ci`, :func:`mean_mde`: the interval and the detectable difference of such a mean;
- :func:`tost_p`: two one-sided tests for equivalence within a margin;
- :func:`benjamini_hochberg`: the false-discovery-rate adjustment.

docs/statistics.md gives the formulas and their sources.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np

POWER = 0.8
EXACT_MAX = 1000   # nonzero paired differences up to which the sign-flip p is exact (beyond: normal)


def benjamini_hochberg(pvalues) -> list:
    """Benjamini and Hochberg's (1995) step-up adjustment, in the given order: the k-th smallest of m
    p-values times m/k, made monotone from the largest down, capped at 1."""
    p = np.asarray([float(v) for v in pvalues], dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def _rejection_bounds(n: int, alpha: float) -> np.ndarray:
    """For D = 0..n discordant pairs, the largest k with McNemar's exact p (2·P(Bin(D, ½) <= k))
    below alpha; -1 where no split of D pairs reaches it."""
    from scipy.stats import binom

    d = np.arange(n + 1)
    k = binom.ppf(alpha / 2, d, 0.5).astype(int)   # the smallest k with P(Bin(D, ½) <= k) >= alpha/2
    return k - 1


def mcnemar_power(n: int, discordance: float, delta: float, alpha: float) -> float:
    """Power of McNemar's exact test (two-sided, reject at p < alpha) on n pairs when a pair is
    discordant with probability q = max(discordance, |delta|) and the two attacks' rates differ by
    delta (so a discordant pair goes to the better attack with probability (q + |delta|) / 2q)."""
    from scipy.stats import binom

    delta = abs(delta)
    q = min(1.0, max(discordance, delta))
    if q == 0 or n == 0:
        return 0.0
    pi = (q + delta) / (2 * q)
    d = np.arange(n + 1)
    k = _rejection_bounds(n, alpha)
    ok = k >= 0
    reject = np.zeros(n + 1)
    reject[ok] = binom.cdf(k[ok], d[ok], pi) + binom.sf(d[ok] - k[ok] - 1, d[ok], pi)
    return float(np.sum(binom.pmf(d, n, q) * reject))


def mcnemar_mde(n: int, discordant: int, alpha: float, power: float = POWER) -> float:
    """The smallest difference of two paired rates (a fraction) that McNemar's exact test on n pairs
    detects with the given power at level alpha, the pairs being discordant at least as often as the
    row's were (discordant / n). NaN where even a difference of 1 (every pair to one attack) is not
    detected that often. Found by bisection: power grows with the difference."""
    if n <= 0:
        return float("nan")
    q = discordant / n
    if mcnemar_power(n, q, 1.0, alpha) < power:
        return float("nan")
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        if mcnemar_power(n, q, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def sign_flip_p(values: Sequence[int]) -> float:
    """Two-sided p of the paired sign-flip test: under no difference each image's difference is as
    likely to have either sign, and p is the share of the 2^n sign patterns whose |sum| is at least
    the observed |sum|. ``values`` are integers (the per-image differences in a common unit), so the
    null distribution is counted exactly by convolution; zeros drop out. Beyond ``EXACT_MAX``
    nonzero values the normal approximation (variance Σv²) is used. Never 0."""
    v = np.abs(np.asarray(values, dtype=np.int64))
    observed = abs(int(np.sum(values)))
    v = v[v != 0]
    if len(v) == 0:
        return 1.0
    if len(v) > EXACT_MAX:
        return float(math.erfc(observed / math.sqrt(2 * float(np.sum(v.astype(float) ** 2)))))
    total = int(v.sum())
    dist = np.zeros(2 * total + 1)   # index s + total holds P(sum = s)
    dist[total] = 1.0
    for x in v:
        dist = 0.5 * (np.roll(dist, x) + np.roll(dist, -x))   # the tails never wrap: |sum| <= total
    sums = np.arange(-total, total + 1)
    return float(min(1.0, dist[np.abs(sums) >= observed].sum()))


def bootstrap_mean_ci(d: Sequence[float], n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences, resampling images with a
    fixed seed (so the same inputs give the same interval)."""
    d = np.asarray(d, dtype=float)
    if len(d) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def mean_mde(d: Sequence[float], alpha: float, power: float = POWER) -> float:
    """The smallest mean paired difference that a two-sided test at level alpha detects with the given
    power, by the normal approximation (z_{1-alpha/2} + z_power)·sd/√n, sd the paired differences'
    sample standard deviation. NaN where they do not vary (no image differs: the spread is unknown)."""
    from scipy.stats import norm

    d = np.asarray(d, dtype=float)
    if len(d) < 2 or np.std(d) == 0:
        return float("nan")
    return float((norm.isf(alpha / 2) + norm.ppf(power)) * np.std(d, ddof=1) / math.sqrt(len(d)))


def tost_p(diff: float, se: float, margin: float) -> float:
    """Two one-sided tests (Schuirmann 1987) of |true difference| < margin, by the normal
    approximation: the larger of the two one-sided p-values. With se = 0 it is 0 inside the margin and
    1 outside."""
    from scipy.stats import norm

    if se == 0 or not math.isfinite(se):
        return 0.0 if abs(diff) < margin else 1.0
    return float(max(norm.sf((diff + margin) / se), norm.cdf((diff - margin) / se)))


def mcnemar_se(only_a: int, only_b: int, n: int) -> float:
    """Standard error of the difference of two paired rates, (b − c)/n: √((b + c)/n − ((b − c)/n)²)/√n."""
    if n <= 0:
        return float("nan")
    pb, pc = only_a / n, only_b / n
    return math.sqrt(max(0.0, pb + pc - (pb - pc) ** 2) / n)
