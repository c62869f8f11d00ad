"""Statistics for transfer tables: Wilson intervals for a rate, McNemar's test for two attacks.

Both are pure functions of counts, so they can be checked against textbook values.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

Z95 = 1.959963984540054  # the 97.5% standard normal quantile


def wilson(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """Wilson score interval for k successes in n trials, as fractions in [0, 1].

    Unlike the normal approximation it stays inside [0, 1] and is sensible at k = 0 or n,
    which transfer rates often are (Wilson, JASA 1927; Agresti & Coull, 1998).
    """
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(b: int, c: int) -> Dict[str, float]:
    """McNemar's test on paired binary outcomes.

    ``b``: images fooled by attack A only; ``c``: fooled by B only (the discordant pairs).
    Returns the exact two-sided binomial p-value (the recommended form for small b + c) and
    the continuity-corrected chi-square statistic with its p-value.
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar: counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "p_exact": 1.0, "chi2": 0.0, "p_chi2": 1.0}
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    p_exact = min(1.0, 2 * tail)
    chi2 = (abs(b - c) - 1) ** 2 / n if n else 0.0
    p_chi2 = math.erfc(math.sqrt(chi2 / 2))  # survival function of chi-square with 1 dof
    return {"b": b, "c": c, "p_exact": p_exact, "chi2": chi2, "p_chi2": p_chi2}


def holm(pvalues) -> list:
    """Holm's step-down adjustment (Holm, Scand. J. Statist. 1979) of a family of p-values, in the
    given order: the k-th smallest is multiplied by (m − k + 1), made monotone, capped at 1."""
    p = [float(v) for v in pvalues]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def _ranks(values) -> list:
    """Average ranks (1-based) with ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


EXACT_N = 10   # up to this many points, Spearman's p is exact (every pairing) and no interval is given


def spearman_test(x, y, z: float = Z95) -> Dict[str, float]:
    """Spearman's ρ with its two-sided p-value and, from n = 11 on, a 95% interval.

    Up to ``EXACT_N`` points the p-value is exact: ρ over every one of the n! pairings, as SciPy's
    ``permutation_test(..., permutation_type="pairings", n_resamples=inf)`` computes it (twice the
    smaller one-sided tail, at most 1), so it is never 0 (ρ = −1 at n = 3 has p = 1/3). There no
    interval is given: Fisher's z is not valid at so few points. From 11 points on, the t
    approximation with n − 2 degrees of freedom (as SciPy's ``spearmanr``) and Fisher's z with
    Bonett and Wright's (2000) standard error √((1 + ρ²/2)/(n − 3)). ``method`` says which.
    NaN where n < 3 or a side is constant."""
    from scipy.stats import t as student_t

    x, y = [float(v) for v in x], [float(v) for v in y]
    n = len(x)
    nan = {"rho": float("nan"), "p": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": n,
           "method": ""}
    if n != len(y):
        raise ValueError(f"spearman_test: {n} values against {len(y)}")
    if n < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return nan
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    rho = max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
    lo = hi = float("nan")
    if n <= EXACT_N:
        return {"rho": rho, "p": _exact_spearman_p(rx, ry), "ci_low": lo, "ci_high": hi, "n": n,
                "method": "exact (all pairings); no interval at n <= 10"}
    if abs(rho) == 1.0:
        p = 0.0
    else:
        tval = rho * math.sqrt((n - 2) / (1 - rho * rho))
        p = float(2 * student_t.sf(abs(tval), n - 2))
    if abs(rho) < 1.0:
        zr, se = math.atanh(rho), math.sqrt((1 + rho * rho / 2) / (n - 3))
        lo, hi = math.tanh(zr - z * se), math.tanh(zr + z * se)
    return {"rho": rho, "p": p, "ci_low": lo, "ci_high": hi, "n": n,
            "method": "t approximation; Fisher z interval (Bonett-Wright)"}


def _pairings(n: int):
    """Every permutation of range(n), as an (n!, n) int8 array (n <= 10: at most 3.6 million rows)."""
    import numpy as np

    perms = np.zeros((1, 0), dtype=np.int8)
    for k in range(n):   # insert k at every position of each permutation of range(k)
        m = len(perms)
        out = np.empty((m * (k + 1), k + 1), dtype=np.int8)
        for pos in range(k + 1):
            block = out[pos * m:(pos + 1) * m]
            block[:, :pos], block[:, pos], block[:, pos + 1:] = perms[:, :pos], k, perms[:, pos:]
        perms = out
    return perms


def _exact_spearman_p(rx, ry) -> float:
    """Two-sided p of Spearman's ρ over every pairing of the ranks (ties kept as average ranks): the
    statistic Σ(rx − r̄)(ry − r̄) orders the pairings as ρ does. Compared with a relative tolerance, as
    SciPy's permutation_test does, so that a pairing equal to the observed one counts as at least as extreme."""
    import numpy as np

    a = np.asarray(rx, dtype=np.float64) - np.mean(rx)
    b = np.asarray(ry, dtype=np.float64) - np.mean(ry)
    observed = float(a @ b)
    tol = 1e-12 * max(1.0, abs(observed))
    greater = less = 0
    perms = _pairings(len(a))
    for lo in range(0, len(perms), 1 << 19):   # in blocks: 10! pairings at once would take 290 MB
        stats = b[perms[lo:lo + (1 << 19)]] @ a
        greater += int(np.count_nonzero(stats >= observed - tol))
        less += int(np.count_nonzero(stats <= observed + tol))
    total = len(perms)
    return min(1.0, 2 * min(greater, less) / total)


def partial_spearman(x, y, covariates, z: float = Z95) -> Dict[str, float]:
    """Spearman's partial correlation of x and y given the covariates: every variable ranked (average
    ranks for ties), the ranks of x and of y each regressed linearly on the covariates' ranks (with an
    intercept), and Pearson's r of the two residuals. With one covariate it equals
    (ρxy − ρxz·ρyz)/√((1 − ρxz²)(1 − ρyz²)). The 95% interval is Fisher's z with Bonett and Wright's
    standard error, its degrees of freedom lowered by the k covariates: √((1 + r²/2)/(n − 3 − k)); p
    from the t approximation with n − 2 − k degrees of freedom. NaN where n − 3 − k < 1 or a residual
    is constant."""
    import numpy as np
    from scipy.stats import t as student_t

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    cov = [np.asarray(c, dtype=float) for c in covariates]
    n, k = len(x), len(cov)
    nan = {"rho": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p": float("nan"), "n": n}
    if n - 3 - k < 1:
        return nan
    design = np.column_stack([np.ones(n)] + [np.asarray(_ranks(list(c))) for c in cov])

    def residual(v):
        r = np.asarray(_ranks(list(v)))
        coef, *_ = np.linalg.lstsq(design, r, rcond=None)
        return r - design @ coef

    ex, ey = residual(x), residual(y)
    sx, sy = float(np.sqrt(ex @ ex)), float(np.sqrt(ey @ ey))
    if sx < 1e-9 * n or sy < 1e-9 * n:
        return nan
    r = max(-1.0, min(1.0, float(ex @ ey) / (sx * sy)))
    if abs(r) == 1.0:
        return {"rho": r, "ci_low": r, "ci_high": r, "p": 0.0, "n": n}
    df = n - 2 - k
    p = float(2 * student_t.sf(abs(r) * math.sqrt(df / (1 - r * r)), df))
    zr, se = math.atanh(r), math.sqrt((1 + r * r / 2) / (n - 3 - k))
    return {"rho": r, "ci_low": math.tanh(zr - z * se), "ci_high": math.tanh(zr + z * se), "p": p, "n": n}


def auroc(scores, positive) -> float:
    """Area under the ROC curve of ``scores`` for telling ``positive`` (true) from the rest: the
    Mann-Whitney probability that a positive outscores a negative, ties counting half. NaN when only
    one class occurs."""
    s = [float(v) for v in scores]
    pos = [bool(v) for v in positive]
    n1 = sum(pos)
    n0 = len(pos) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = _ranks(s)
    r1 = sum(r for r, p in zip(ranks, pos) if p)
    return (r1 - n1 * (n1 + 1) / 2) / (n1 * n0)


def auroc_interval(scores, positive, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Tuple[float, float]:
    """Percentile bootstrap interval of :func:`auroc` over images (resampled with replacement, a fixed
    seed; resamples with one class only are drawn again). NaN when only one class occurs."""
    import numpy as np

    s = np.asarray(scores, dtype=float)
    pos = np.asarray(positive, dtype=bool)
    if pos.all() or not pos.any():
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    n = len(s)
    while len(values) < n_boot:
        idx = rng.integers(0, n, n)
        p = pos[idx]
        if p.all() or not p.any():
            continue
        values.append(_auroc_np(s[idx], p))
    a = (1 - level) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))


def _auroc_np(s, pos) -> float:
    """:func:`auroc` vectorised (average ranks by pandas), for the bootstrap."""
    import pandas as pd

    ranks = pd.Series(s).rank(method="average").to_numpy()
    n1 = int(pos.sum())
    n0 = len(pos) - n1
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
