"""The paired statistics behind --versus (flatbench/report/paired.py), each against SciPy or a
simulation written here: Benjamini-Hochberg, the exact sign-flip test, McNemar's power and the
smallest detectable difference, the bootstrap interval and two one-sided tests."""
import itertools
import math

import numpy as np
import pytest
from scipy.stats import binomtest, false_discovery_control, norm, permutation_test

from flatbench.report.paired import (benjamini_hochberg, bootstrap_mean_ci, mcnemar_mde, mcnemar_power, mean_mde,
                                     sign_flip_p, tost_p)


def test_benjamini_hochberg_equals_scipy():
    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 40):
        p = rng.random(m) ** 3
        assert benjamini_hochberg(p) == pytest.approx(list(false_discovery_control(p)), rel=1e-12)


def test_sign_flip_is_exact_and_equals_scipy_permutation_test():
    rng = np.random.default_rng(1)
    for n in (2, 5, 11, 14):
        v = rng.integers(-4, 5, n)
        want = permutation_test((v,), np.sum, permutation_type="samples", n_resamples=np.inf,
                                alternative="two-sided").pvalue
        # scipy doubles the smaller tail; the |sum| form is the same for this symmetric null
        brute = np.mean([abs(np.dot(s, v)) >= abs(v.sum()) for s in itertools.product((1, -1), repeat=n)])
        assert sign_flip_p(v) == pytest.approx(brute, abs=1e-12)
        assert sign_flip_p(v) == pytest.approx(min(1.0, want), abs=1e-12)
    assert sign_flip_p([0, 0, 0]) == 1.0
    # 30 images all one way: 2 / 2^30, small but never 0
    assert sign_flip_p([1] * 30) == pytest.approx(2 / 2 ** 30, rel=1e-9) and sign_flip_p([1] * 30) > 0


def _simulated_power(n, q, delta, alpha, reps, rng):
    pi = (q + delta) / (2 * q)
    hits = 0
    for _ in range(reps):
        d = rng.binomial(n, q)
        b = rng.binomial(d, pi)
        hits += d > 0 and binomtest(b, d, 0.5).pvalue < alpha
    return hits / reps


def test_mcnemar_power_matches_a_simulation_of_the_exact_test():
    rng = np.random.default_rng(2)
    for n, q, delta, alpha in ((100, 0.2, 0.1, 0.01), (60, 0.3, 0.2, 0.05), (300, 0.1, 0.05, 0.05 / 100)):
        assert mcnemar_power(n, q, delta, alpha) == pytest.approx(_simulated_power(n, q, delta, alpha, 3000, rng),
                                                                  abs=0.03)


def test_mcnemar_mde_is_the_smallest_difference_with_80_percent_power():
    for n, disc, alpha in ((100, 14, 0.05 / 112), (300, 42, 0.05 / 112), (100, 0, 0.05), (40, 20, 0.05)):
        mde = mcnemar_mde(n, disc, alpha)
        assert mcnemar_power(n, disc / n, mde, alpha) >= 0.8 > mcnemar_power(n, disc / n, mde - 1e-3, alpha)
    # more pairs see less; a stricter level sees more coarsely
    assert mcnemar_mde(300, 42, 0.001) < mcnemar_mde(100, 14, 0.001) < mcnemar_mde(100, 14, 1e-5)
    # near the normal approximation's answer (Connor 1987) where it holds: 1000 pairs, 20% discordant
    n, q, a = 1000, 0.2, 0.05
    z = norm.isf(a / 2) + norm.ppf(0.8)
    approx = z * math.sqrt(q / n)   # delta small against q
    assert mcnemar_mde(n, int(q * n), a) == pytest.approx(approx, rel=0.1)
    # 5 pairs can never reach 0.05/100: even all five to one attack gives p = 1/16
    assert math.isnan(mcnemar_mde(5, 5, 0.05 / 100))


def test_bootstrap_interval_mean_mde_and_tost():
    rng = np.random.default_rng(3)
    d = rng.integers(-2, 3, 200) / 6
    lo, hi = bootstrap_mean_ci(d)
    assert lo < d.mean() < hi and bootstrap_mean_ci(d) == (lo, hi)          # a fixed seed
    se = d.std(ddof=1) / math.sqrt(len(d))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)                 # about the normal interval
    assert mean_mde(d, 0.05) == pytest.approx((1.959964 + 0.841621) * se, rel=1e-5)
    assert math.isnan(mean_mde(np.zeros(50), 0.05))
    # TOST: a difference of 0 with se 1 point is equivalent within 5 points, not within 1
    assert tost_p(0.0, 0.01, 0.05) == pytest.approx(norm.sf(5)) and tost_p(0.0, 0.01, 0.01) > 0.1
    assert tost_p(0.03, 0.01, 0.05) == pytest.approx(norm.cdf(-2))
