"""Build attacks by name: method presets and keyword routing to the loop's parts."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch.nn as nn

from ..migration import current_keywords, old_keyword
from ..registry import ConfigError, suggest
from ..units import api_length
from .budget import fit_or_none
from .estimators import ESTIMATORS
from .loop import Attack
from .optimizers import OPTIMIZERS
from .transforms import TRANSFORMS

METHOD_DIR = Path(__file__).resolve().parent.parent / "conf" / "method"


def _read_methods(directory: Path = METHOD_DIR) -> Dict[str, Tuple[str, str, Tuple[str, ...]]]:
    """Method presets from their one source, conf/method/NAME.yaml: each selects an optimizer,
    an estimator and the transforms (``override /optimizer``, ``/estimator``, ``/transforms``);
    ``create_attack(NAME)`` and ``method=NAME`` on the command line therefore build the same loop."""
    import yaml

    methods = {}
    for f in sorted(directory.glob("*.yaml")):
        chosen = {}
        for entry in yaml.safe_load(f.read_text()).get("defaults", []):
            if isinstance(entry, dict):
                for k, v in entry.items():
                    chosen[k.replace("override", "").strip().lstrip("/")] = v
        if not {"optimizer", "estimator", "transforms"} <= set(chosen):
            raise RuntimeError(f"{f} must override /optimizer, /estimator and /transforms")
        methods[f.stem] = (str(chosen["optimizer"]), str(chosen["estimator"]), tuple(chosen["transforms"] or ()))
    return methods


# method name -> (optimizer, estimator, transforms)
METHODS: Dict[str, Tuple[str, str, Tuple[str, ...]]] = _read_methods()

# What a method preset may set besides its parts: the loop's T and α (the published arguments
# of RAP and MEF differ from T = 10, α = ε/T) and its parts' settings (MEF's MI decay 0.5).
PRESET_KEYS = ("steps", "alpha", "optimizer", "estimator")


def _read_presets(directory: Path = METHOD_DIR) -> Dict[str, Dict[str, Any]]:
    """Each method file's own settings (``steps``, ``alpha`` in 1/255 units, ``optimizer: {..}``,
    ``estimator: {..}``); the command line reads the same file, so both build the same loop."""
    import yaml

    presets = {}
    for f in sorted(directory.glob("*.yaml")):
        body = {k: v for k, v in (yaml.safe_load(f.read_text()) or {}).items() if k != "defaults"}
        unknown = sorted(set(body) - set(PRESET_KEYS))
        if unknown:
            raise RuntimeError(f"{f}: a method preset may set only {', '.join(PRESET_KEYS)}; found {', '.join(unknown)}")
        presets[f.stem] = body
    return presets


# method name -> the settings its file fixes (empty for most: T = 10, α = ε/T, the parts' defaults)
METHOD_PRESETS: Dict[str, Dict[str, Any]] = _read_presets()

_LOOP_KEYS = ("eps", "steps", "alpha", "norm", "targeted", "chunk", "memory_budget_mb", "amp", "channels_last",
              "tuning_file",
              "check_finite", "loss", "name")


def build_attack(
    model: nn.Module,
    *,
    optimizer: str = "ifgsm",
    optimizer_kwargs: Optional[Mapping[str, Any]] = None,
    estimator: str = "plain",
    estimator_kwargs: Optional[Mapping[str, Any]] = None,
    transforms: Union[Sequence[str], Mapping[str, Mapping[str, Any]], None] = None,
    **loop_kwargs: Any,
) -> Attack:
    """Assemble an :class:`Attack` from part names and each part's keyword arguments."""
    if isinstance(transforms, Mapping):
        specs = [(k, dict(v or {})) for k, v in transforms.items()]
    else:
        specs = [(k, {}) for k in (transforms or ())]
    return Attack(
        model,
        estimator=ESTIMATORS.build(estimator, **dict(estimator_kwargs or {})),
        optimizer=OPTIMIZERS.build(optimizer, **dict(optimizer_kwargs or {})),
        transforms=[TRANSFORMS.build(name, **kw) for name, kw in specs],
        **loop_kwargs,
    )


def _from_file(decl, settings: Optional[Mapping[str, Any]], eps: Optional[float] = None) -> Dict[str, Any]:
    """A preset file's settings of a part, lengths converted from 1/255 units; a length written as a
    rule of ε (RAP's ``eps_n: eps``) is resolved at ``eps`` (a fraction, as the API takes it)."""
    out = {}
    for k, v in dict(settings or {}).items():
        if k == "name":
            continue
        if decl.param(k).length and v is not None:
            v = _length(v, eps, k)
        out[k] = v
    return out


def _length(v: Any, eps: Optional[float], key: str) -> float:
    """A preset's length in [0,1] units: a number in 1/255 units, or a rule of ε resolved in 1/255
    units first, so that eps/10 at ε = 16/255 is exactly the 1.6/255 the file held before."""
    from ..scaling import parse_rule, resolve_length

    if isinstance(v, str):
        try:
            parse_rule(v)
        except ValueError:
            raise ConfigError(f"{key}={v!r}: a length is a number, eps, eps/K or eps*K") from None
        if eps is None:
            raise ConfigError("create_attack needs eps (a fraction of the [0,1] range, e.g. 16/255)")
        return resolve_length(v, eps * 255, key) / 255
    return v / 255


def _budget(name, budget, given, opt, est, est_kw, tf_specs, loop_kw):
    """What budget=B sets (the method's own cost knob, flatbench/attacks/budget.py), or None; the
    knob passed as well is an error, in the API where it can be told from the preset's value."""
    fit = fit_or_none(budget, optimizer=opt, estimator=est, estimator_kwargs=est_kw, transforms=tf_specs,
                      steps=loop_kw.get("steps", 10))
    if fit is not None:
        clash = sorted(given & {fit.knob, *(k for k, _ in ESTIMATORS.get(est).cost.follow)})
        if clash:
            raise ConfigError(f"budget={budget} sets {', '.join(clash)} ({name}'s cost knob); pass the budget or "
                              f"{clash[0]}, not both")
    return fit


def _apply_preset(name: str, opt: str, est: str, loop_kw: Dict[str, Any], opt_kw: Dict[str, Any],
                  est_kw: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, str]]:
    """The method file's own settings under the caller's (T and α into ``loop_kw``; the optimizer's and the
    estimator's, each only while the preset's part is the one in use); the lengths written as rules of ε."""
    from ..scaling import rule_text

    preset = METHOD_PRESETS.get(name, {})
    if "steps" in preset:
        loop_kw.setdefault("steps", preset["steps"])
    rules = {}
    if "alpha" in preset and "alpha" not in loop_kw:
        # the file's 1/255 units (or a rule of ε: alpha: eps/10); the API's fractions
        loop_kw["alpha"] = _length(preset["alpha"], loop_kw.get("eps"), "alpha")
        if rule_text(preset["alpha"]):
            rules["alpha"] = rule_text(preset["alpha"])
    if opt == METHODS[name][0]:   # the preset's settings of a part apply to that part only
        opt_kw = {**_from_file(OPTIMIZERS.get(opt), preset.get("optimizer"), loop_kw.get("eps")), **opt_kw}
    if est == METHODS[name][1]:
        own = dict(preset.get("estimator") or {})
        rules.update({f"estimator.{k}": rule_text(v) for k, v in own.items() if rule_text(v) and k not in est_kw})
        est_kw = {**_from_file(ESTIMATORS.get(est), own, loop_kw.get("eps")), **est_kw}
    return opt_kw, est_kw, rules


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
    for k in ("eps", "alpha"):   # "16/255" as written; 16 refused under linf (flatbench/units.py)
        if k in loop_kw:
            loop_kw[k] = api_length(k, loop_kw[k], loop_kw.get("norm", "linf"))
    opt_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTIMIZERS.get(opt).names()}
    est_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in ESTIMATORS.get(est).names()}
    opt_kw, est_kw, rules = _apply_preset(name, opt, est, loop_kw, opt_kw, est_kw)
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
    if "members" in ESTIMATORS.get(est).names() and est_kw.get("members") is None and model is not None:
        from .loop import ensemble_members

        est_kw["members"] = len(ensemble_members(model)) or None   # CWA: the ensemble's size (one model: the call says so)
    fit = _budget(name, budget, given, opt, est, est_kw, tf_specs, loop_kw)
    if fit is not None:
        loop_kw["steps"], est_kw = fit.steps, fit.estimator_kwargs
    attack = build_attack(model, optimizer=opt, optimizer_kwargs=opt_kw, estimator=est, estimator_kwargs=est_kw,
                          transforms=tf_specs, **loop_kw)
    attack.rules = rules
    attack.budget = fit.record() if fit is not None else None
    return attack
