"""Units of length, in one place: the command line and config files write ε, α and the radii in
1/255 of the pixel range (``eps=16``), the Python API as fractions of the [0,1] range
(``eps=16/255``). Both accept a written fraction, ``16/255``, which means the same on either side.

A bare number keeps its interface's unit, and a number that is almost surely the other unit is
refused in one line that gives both readings:

* command line, ``norm=linf``: ε below 1 (``eps=0.0627`` is 16/255 written as a fraction; as
  1/255 units it would be a sixteenth of one grey level), and any other length below ε/1000 (a
  fraction written where 1/255 units are read is 255 times too small: α = ε/T written as a fraction
  is below ε/1000 from T = 4 on, and no attack steps by a thousandth of its radius);
* API, ``norm=linf``: ε or any other length above 1, the whole pixel range (``eps=16`` is 16/255
  written in 1/255 units).

L2 radii are not checked: in 1/255 units they are thousands on ImageNet, as fractions they pass 1.

Pure: no config or torch imports.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from flatbench.core.registry import ConfigError

PIXEL = 255.0
_WRITTEN = re.compile(r"^\s*(?P<a>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*/\s*(?P<b>[0-9]*\.?[0-9]+)\s*$")

# Thresholds of the rules above (docs/units.md states them; tests/test_units.py holds them).
CLI_MIN_EPS = 1.0          # command line, linf: an ε below one grey level is a fraction written in 1/255 units
CLI_MIN_RATIO = 1e-3       # command line, linf: a length below ε/1000 is a fraction written in 1/255 units
API_MAX_LENGTH = 1.0       # API, linf: a length above the whole range is 1/255 units written as a fraction


def written_fraction(value: Any) -> Optional[float]:
    """``"16/255"`` as 16/255 (a float); None for anything that is not a string ``A/B``."""
    if not isinstance(value, str):
        return None
    m = _WRITTEN.match(value)
    if not m:
        return None
    a, b = float(m.group("a")), float(m.group("b"))
    if b == 0:
        raise ConfigError(f"{value!r}: a written fraction A/B needs B > 0")
    return a / b


def to_255(value: Optional[float]) -> Optional[float]:
    """A fraction of the [0,1] range in 1/255 units, rounded to 6 decimals (as the columns write it)."""
    return None if value is None else round(float(value) * PIXEL, 6)


def px(value_255: Optional[float]) -> Optional[float]:
    """1/255 units (configs, CSV columns) -> fraction of the [0,1] range (the attack API)."""
    return None if value_255 is None else float(value_255) / PIXEL


def config_length(value: Any) -> Any:
    """A config length as written: ``16/255`` becomes 16 (1/255 units; exactly, so that ``eps=16/255``
    and ``eps=16`` are one cell), anything else is returned as it is (a number, a rule of ε, null)."""
    frac = written_fraction(value)
    return value if frac is None else to_255(frac)


def _readings_cli(key: str, value: float) -> str:
    return (f"{key}={value:g} on the command line is in 1/255 units ({value:g}/255 = {value / PIXEL:.3g} of the "
            f"pixel range); if you meant the fraction {value:g} (= {value * PIXEL:.4g}/255), write "
            f"{key}={value * PIXEL:.4g} or {key}={value * PIXEL:.4g}/255")


def check_config_eps(eps: Any, norm: str) -> float:
    """ε from the command line or a config file, in 1/255 units (a written fraction converted)."""
    eps = config_length(eps)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ConfigError(f"eps={eps!r}: expected a number in 1/255 units (16) or a written fraction (16/255)")
    if norm == "linf" and 0 < eps < CLI_MIN_EPS:
        raise ConfigError(_readings_cli("eps", float(eps)))
    return float(eps)


def check_config_length(key: str, value: Any, eps: float, norm: str) -> Any:
    """A length other than ε from the command line (α, a radius), a number in 1/255 units: refused
    under linf when below ε/1000 (see the module docstring). Rules of ε and nulls pass as they are."""
    if norm == "linf" and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and 0 < value < eps * CLI_MIN_RATIO:
        raise ConfigError(f"{_readings_cli(key, float(value))} (a length below eps/1000 is refused)")
    return value


def api_length(key: str, value: Any, norm: str = "linf") -> Any:
    """A length given to the API, as a fraction of [0,1]: a written fraction (``"16/255"``) is
    converted; under linf a number above 1 is refused with both readings. None passes."""
    frac = written_fraction(value)
    if frac is not None:
        value = frac
    if norm == "linf" and isinstance(value, (int, float)) and not isinstance(value, bool) and value > API_MAX_LENGTH:
        raise ConfigError(f"{key}={value:g} is a fraction of the [0,1] pixel range in the Python API, so {value:g} "
                          f"is more than the whole range; if you meant {value:g}/255 (1/255 units, as on the command "
                          f"line), write {key}={value:g}/255 or {key}=\"{value:g}/255\"")
    return value
