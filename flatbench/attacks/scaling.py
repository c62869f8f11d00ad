"""Lengths written as multiples of ε: ``eps``, ``eps/8``, ``eps*2`` (also ``2*eps``).

The papers define their step sizes and radii at ε = 16/255 (MEF: α = 1.6/255 with T = 20; RAP:
α = 2/255, ε_n = 16/255, α_n = 2/255), and mean them as fractions of ε: TransferAttack's MEF walks
α·T = 2ε, RAP's reverse perturbation is as large as the attack's. Written as numbers, those
presets stop meaning the published ratios when ε changes (at ε = 32/255 MEF walked α·T = ε and
RAP's ε_n was half of ε). The method presets therefore write them as rules (``alpha: eps/10``),
resolved here against the cell's ε; at ε = 16/255 every rule gives exactly the number the preset
held before, so the cells keep their ids. A number given by the user still wins.

Pure: no config or torch imports.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

from flatbench.core.registry import ConfigError

_RULE = re.compile(r"^\s*(?:(?P<m1>[0-9]*\.?[0-9]+)\s*\*\s*)?eps\s*(?:(?P<op>[*/])\s*(?P<k>[0-9]*\.?[0-9]+))?\s*$")
FORMS = "a number, eps, eps/K or eps*K (K a positive number)"


def parse_rule(value) -> Optional[Tuple[str, float]]:
    """("/", K) for eps/K, ("*", K) for eps*K or K*eps, ("*", 1.0) for eps; None for a number."""
    if not isinstance(value, str):
        return None
    m = _RULE.match(value)
    if not m or (m.group("m1") and m.group("op")):
        raise ValueError(value)
    if m.group("m1"):
        op, k = "*", float(m.group("m1"))
    elif m.group("op"):
        op, k = m.group("op"), float(m.group("k"))
    else:
        op, k = "*", 1.0
    if k <= 0:
        raise ValueError(value)
    return op, k


def resolve_length(value, eps: float, key: str):
    """``value`` as a number in ε's units: a number is returned as it is, a rule is applied to ``eps``
    (divided as written, so eps/10 at ε = 16 is exactly 1.6). A malformed rule fails naming ``key``."""
    try:
        rule = parse_rule(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r}: a length is {FORMS}") from None
    if rule is None:
        return value
    op, k = rule
    return eps / k if op == "/" else eps * k


def rule_text(value) -> str:
    """The rule as describe writes it (ε/8, 2·ε, ε), or '' for a number."""
    try:
        rule = parse_rule(value)
    except ValueError:
        return ""
    if rule is None:
        return ""
    op, k = rule
    if op == "*" and k == 1.0:
        return "ε"
    return f"ε/{k:g}" if op == "/" else f"{k:g}·ε"
