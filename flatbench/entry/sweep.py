"""A sweep's cells, expanded in one place and on Hydra's public override API (``flatbench plan``, :func:`sweep_cells`, and
the sweep's progress record both use it): the experiment's ``hydra.sweeper.params`` overridden by the
command line's keys, then the cartesian product of every comma list, the last key varying fastest,
as Hydra's basic sweeper launches them."""
from __future__ import annotations

import itertools
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

from flatbench.core.registry import ConfigError


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


# The groups whose choice a sweep may change, and the overrides that may choose them (an experiment's own
# sweeper params often sweep methods).
PART_GROUPS = ("optimizer", "estimator", "transforms")
CHOOSERS = ("method", "experiment", *PART_GROUPS)


def force_part_keys(args: List[str]) -> List[str]:
    """In a sweep (``-m``) that chooses methods or parts, ``estimator.n_samples=2`` is written ``++estimator.n_samples=2``.

    Hydra first composes a sweep's config without its swept values, so a key of the swept estimator is
    checked against the default one's (the plain gradient has none) and the whole sweep failed with
    "unknown key". Forced, the key reaches each cell, where the startup check (the part's declaration)
    still refuses a key that the cell's part does not have, with its valid keys."""
    if not any(a.partition("=")[0] in CHOOSERS for a in args):
        return args
    return [f"++{a}" if a.partition("=")[0].split(".")[0] in PART_GROUPS and "." in a.partition("=")[0]
            and "=" in a else a for a in args]


def sweep_cells(argv: List[str], multirun: bool) -> Tuple[List[List[str]], Optional[Dict[str, int]]]:
    """The cells' override lists of a command line (``flatbench plan``): a -m run's grid (the experiment's sweeper params, overridden
    by the command line's keys), or the one cell; for an Optuna search, the corners of its
    space and {"trials": n_trials}."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    from flatbench.entry.compose import compose

    if not multirun:
        return [list(argv)], None
    argv = force_part_keys(list(argv))
    fixed = [o.input_line for o in parse(argv) if not o.is_sweep_override()]
    cfg = compose(fixed, hydra=True)   # the sweeper's params as the experiment sets them
    optuna = "optuna" in str(cfg.hydra.sweeper.get("_target_", "")).lower()
    parsed = parse(sweep_overrides(argv, cfg.hydra.sweeper.get("params")))
    if not optuna:
        return grid(parsed), None
    # An Optuna search picks its trials as it runs: plan the corners of its space (each
    # interval's ends, each range's and choice's values), which bound any trial's cost.
    corners = []
    for o in parsed:
        if not o.is_sweep_override():
            corners.append(o.input_line)
            continue
        v = o.value()
        if isinstance(v, IntervalSweep):
            values = [v.start, v.end]
        elif isinstance(v, RangeSweep):
            values = list(range(int(v.start), int(v.stop), int(v.step or 1)))
            values = values if len(values) <= 3 else [values[0], values[len(values) // 2], values[-1]]
        elif isinstance(v, ChoiceSweep):
            values = list(v.list)
        else:
            raise ConfigError(f"flatbench plan: cannot plan the search parameter {o.input_line!r}")
        corners.append(f"{o.key_or_group}=" + ",".join(str(x) for x in values))
    return grid(parse(corners)), {"trials": int(cfg.hydra.sweeper.get("n_trials") or 0)}
