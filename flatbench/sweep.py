"""A sweep's cells, expanded in one place and on Hydra's public override API (``flatbench plan`` and
the sweep's progress record both use it): the experiment's ``hydra.sweeper.params`` overridden by the
command line's keys, then the cartesian product of every comma list, the last key varying fastest,
as Hydra's basic sweeper launches them."""
from __future__ import annotations

import itertools
from typing import Any, Dict, List, Mapping, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

from .registry import ConfigError


def sweep_overrides(command_line: Sequence[str], params: Optional[Mapping[str, Any]]) -> List[str]:
    """The command line's overrides, then the sweeper's params whose key the command line does not set."""
    given = {a.split("=", 1)[0].lstrip("+~") for a in command_line if "=" in a}
    return list(command_line) + [f"{k}={v}" for k, v in (params or {}).items() if k not in given]


def parse(overrides: Sequence[str]) -> List[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


def grid(overrides: Sequence[Override]) -> List[List[str]]:
    """Every cell's override list. A key given twice keeps its last value and its first place, as in
    Hydra's basic sweeper; a sweep that is not a list (an interval) is an error naming it."""
    choices: Dict[str, List[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ConfigError(f"{o.input_line!r}: the basic sweeper expands comma lists and ranges only")
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
    return [list(cell) for cell in itertools.product(*choices.values())]
