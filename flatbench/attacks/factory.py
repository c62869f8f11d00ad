"""The API's entry by method name (:func:`create_attack`): it routes its keywords to the parts and
resolves them through :func:`flatbench.attacks.spec.resolve_spec`, as a cell's settings do, then builds
with the engine's one builder from typed parts (:func:`flatbench.attacks.spec.build_attack`)."""
from __future__ import annotations

from typing import Any, Dict, Mapping

import torch.nn as nn

from flatbench.core.migration import current_keywords, old_keyword
from flatbench.core.registry import ConfigError, suggest
from flatbench.core.units import api_length
from flatbench.attacks.estimators import ESTIMATORS
from flatbench.attacks.loop import Attack
from flatbench.attacks.model_state import ensemble_size
from flatbench.attacks.optimizers import OPTIMIZERS
from flatbench.attacks.spec import API, METHOD_PRESETS, METHODS, apply_preset, resolve_spec  # noqa: F401 (METHOD_PRESETS re-exported)
from flatbench.attacks.transforms import TRANSFORMS

_LOOP_KEYS = ("eps", "steps", "alpha", "norm", "targeted", "chunk", "memory_budget_mb", "amp", "channels_last",
              "tuning_file",
              "check_finite", "loss", "name")


def create_attack(name: str, model: nn.Module, **kwargs: Any) -> Attack:
    """Create a method by name; every hyperparameter may be passed by its config name.

    ``eps`` (and ``alpha``, ``r``) are fractions of the [0,1] range here. Keywords are routed
    to the part that declares them (:mod:`.parts`): the loop (eps, steps, alpha, norm, targeted,
    chunk, ...), the optimizer (decay), the estimator (PGN: beta, r, zeta, n_samples,
    lookahead, normalize, combine) or a transform (DIM: resize_rate, prob, interpolation; TIM:
    kernel_size, nsig; ...). ``flatbench list methods`` shows each method's parameters.
    ``optimizer=``, ``estimator=`` and ``transforms=`` replace the preset's parts.

    Example: ``create_attack("pgn", model, eps=16/255, steps=10, n_samples=20, zeta=3.0, beta=0.5)``.
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}. Valid choices: {', '.join(sorted(METHODS))}.{suggest(name, METHODS)}")
    old = old_keyword(kwargs)
    if old:
        raise ConfigError(old)
    kwargs = current_keywords(kwargs)
    budget = kwargs.pop("budget", None)
    given = set(kwargs)
    opt, est, tfs = METHODS[name]
    opt = kwargs.pop("optimizer", opt)
    est = kwargs.pop("estimator", est)
    tf_arg = kwargs.pop("transforms", tfs)
    tf_specs: Dict[str, Dict[str, Any]] = (
        {k: dict(v or {}) for k, v in tf_arg.items()} if isinstance(tf_arg, Mapping) else {k: {} for k in tf_arg}
    )
    loop_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _LOOP_KEYS}
    for k in ("eps", "alpha"):   # "16/255" as written; 16 refused under linf (flatbench/core/units.py)
        if k in loop_kw:
            loop_kw[k] = api_length(k, loop_kw[k], loop_kw.get("norm", "linf"))
    opt_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTIMIZERS.get(opt).names()}
    est_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in ESTIMATORS.get(est).names()}
    opt_kw, est_kw, rules = apply_preset(name, opt, est, loop_kw, opt_kw, est_kw)
    for key in list(kwargs):
        owners = [t for t in tf_specs if key in TRANSFORMS.get(t).names()]
        if len(owners) > 1:
            raise ConfigError(f"{key!r} is taken by several transforms ({', '.join(owners)}); "
                              f"pass transforms={{name: {{{key!r}: ...}}}} instead")
        if owners:
            tf_specs[owners[0]][key] = kwargs.pop(key)
    if kwargs:
        valid = set(_LOOP_KEYS) | set(OPTIMIZERS.get(opt).names()) | set(ESTIMATORS.get(est).names())
        for t in tf_specs:
            valid |= set(TRANSFORMS.get(t).names())
        key = next(iter(kwargs))
        raise ConfigError(f"method {name!r}: unknown keyword {key!r}. Valid: {', '.join(sorted(valid))}.{suggest(key, valid)}")
    if "eps" not in loop_kw:
        raise ConfigError("create_attack needs eps (a fraction of the [0,1] range, e.g. 16/255)")
    spec = resolve_spec(unit=API, optimizer=opt, optimizer_kwargs=opt_kw, estimator=est, estimator_kwargs=est_kw,
                        transforms=tf_specs, eps=loop_kw.pop("eps"), steps=loop_kw.pop("steps", 10),
                        alpha=loop_kw.pop("alpha", None), norm=loop_kw.pop("norm", "linf"),
                        targeted=loop_kw.pop("targeted", False), budget=budget, members=ensemble_size(model),
                        given=frozenset(given), rules=rules, method=name)
    return spec.build(model, **loop_kw)
