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
