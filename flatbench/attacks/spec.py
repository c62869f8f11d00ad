"""One attack spec, resolved in one place: what ``create_attack(NAME, ...)`` (the API) and
``flatbench method=NAME ...`` (a cell's settings) both turn into an :class:`AttackSpec`.

* **The preset.** ``conf/method/NAME.yaml`` is the one source of a method: the parts it selects and
  the settings it fixes (T, α, a part's defaults). The command line composes it with Hydra; the
  API reads the same file here (:func:`apply_preset`), so both build the same loop.
* **The unit and the rules of ε.** Lengths arrive in 1/255 units (command line, config files,
  presets) or as fractions of [0,1] (the API); a written fraction (``16/255``) is read as written,
  a number in the other unit refused (:mod:`flatbench.core.units`), a rule of ε (``alpha: eps/10``)
  resolved at the cell's ε, in 1/255 units first so that eps/10 at ε = 16/255 is exactly 1.6/255.
  Everything is computed in the unit it came in and converted once, at :meth:`AttackSpec.loop_kwargs`.
* **The budget.** ``budget=B`` sets the method's cost knob before anything is hashed
  (:mod:`flatbench.attacks.budget`).
* **The ensemble.** CWA's member count K is the surrogate ensemble's size unless given.

The engine then builds only from typed parts (:func:`build_attack`).
Pure: no config objects, no I/O beyond reading the preset files at import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch.nn as nn

from flatbench.core.registry import ConfigError, check_range
from flatbench.attacks.scaling import FORMS, parse_rule, resolve_length, rule_text
from flatbench.core.units import PIXEL, api_length, check_config_eps, check_config_length, config_length
from flatbench.attacks.budget import fit_or_none
from flatbench.attacks.estimators import ESTIMATORS
from flatbench.attacks.loop import Attack
from flatbench.attacks.optimizers import OPTIMIZERS
from flatbench.attacks.transforms import TRANSFORMS

CONFIG, API = "1/255", "fraction"   # the two units lengths arrive in
METHOD_DIR = Path(__file__).resolve().parent.parent / "conf" / "method"


def _read_methods(directory: Path = METHOD_DIR) -> Dict[str, Tuple[str, str, Tuple[str, ...]]]:
    """Method presets from their one source, conf/method/NAME.yaml: each selects an optimizer,
    an estimator and the transforms (``override /optimizer``, ``/estimator``, ``/transforms``)."""
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
    ``estimator: {..}``)."""
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


@dataclass(frozen=True)
class AttackSpec:
    """An attack, resolved: each part by name with its settings, the loop's ε, T, α, norm and target
    mode, and how it was reached (``rules``: lengths given as rules of ε, as describe shows them;
    ``budget``: what budget=B resolved to). Lengths are in ``unit`` (1/255 or fractions of [0,1]);
    ``alpha`` None means ε/T."""

    unit: str
    optimizer: str
    optimizer_kwargs: Dict[str, Any]
    estimator: str
    estimator_kwargs: Dict[str, Any]
    transforms: Dict[str, Dict[str, Any]]
    eps: float
    steps: int
    alpha: Optional[float]
    norm: str = "linf"
    targeted: bool = False
    rules: Dict[str, str] = field(default_factory=dict)
    budget: Optional[Dict[str, Any]] = None

    def loop_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of :func:`build_attack`, lengths as fractions."""
        scale = PIXEL if self.unit == CONFIG else 1.0
        conv = (lambda v: v / scale if _number(v) else v)

        def part(registry, name, kwargs):
            lengths = {p.name for p in registry.get(name).params if p.length}
            return {k: conv(v) if k in lengths else v for k, v in kwargs.items()}

        return dict(
            optimizer=self.optimizer, optimizer_kwargs=part(OPTIMIZERS, self.optimizer, self.optimizer_kwargs),
            estimator=self.estimator, estimator_kwargs=part(ESTIMATORS, self.estimator, self.estimator_kwargs),
            transforms={k: part(TRANSFORMS, k, v) for k, v in self.transforms.items()},
            eps=conv(self.eps), steps=self.steps, alpha=None if self.alpha is None else conv(self.alpha),
            norm=self.norm, targeted=self.targeted)

    def build(self, model, **sizing: Any):
        """The :class:`~flatbench.attacks.loop.Attack` (``sizing``: chunk, memory_budget_mb, amp, ...)."""
        attack = build_attack(model, **sizing, **self.loop_kwargs())
        attack.rules, attack.budget = dict(self.rules), self.budget
        return attack


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _length(value: Any, unit: str, eps: float, key: str, norm: str) -> Any:
    """One length in ``unit``: a written fraction read as written, a rule of ε resolved at ``eps`` (in
    1/255 units first), a number checked against the other unit's reading; None stays None."""
    if value is None:
        return None
    if unit == CONFIG:
        value = config_length(value)
    else:
        value = api_length(key, value, norm)
    if isinstance(value, str):
        try:
            parse_rule(value)
        except ValueError:
            raise ConfigError(f"{key}={value!r}: a length is {FORMS}") from None
        eps255 = eps if unit == CONFIG else eps * PIXEL
        resolved = resolve_length(value, eps255, key)
        return resolved if unit == CONFIG else resolved / PIXEL
    if unit == CONFIG:
        check_config_length(key, value, eps, norm)
    return value


def _lengths(registry, name: str, kwargs: Mapping[str, Any], unit: str, eps: float, norm: str, group: str,
             rules: Dict[str, str]) -> Dict[str, Any]:
    """A part's settings with its declared lengths resolved (:func:`_length`); rules noted in ``rules``."""
    decl = registry.get(name) if name in registry else None
    out = {}
    for k, v in kwargs.items():
        if decl is not None and k in decl.names() and decl.param(k).length:
            if rule_text(v):
                rules[f"{group}.{k}"] = rule_text(v)
            v = _length(v, unit, eps, f"{group}.{k}", norm)
        out[k] = v
    return out


def resolve_spec(*, unit: str, optimizer: str, estimator: str, transforms: Mapping[str, Mapping[str, Any]],
                 eps: Any, optimizer_kwargs: Optional[Mapping[str, Any]] = None,
                 estimator_kwargs: Optional[Mapping[str, Any]] = None, steps: int = 10, alpha: Any = None,
                 norm: str = "linf", targeted: bool = False, budget: Any = None, members: Optional[int] = None,
                 given: frozenset = frozenset(), rules: Optional[Dict[str, str]] = None,
                 method: str = "") -> AttackSpec:
    """The :class:`AttackSpec` of these settings (see the module docstring). ``given``: the keywords the
    caller passed itself, so that a budget and its own knob passed together are refused; ``rules``:
    rules of ε already resolved (a preset's, by :func:`apply_preset`)."""
    if eps is None:
        raise ConfigError("eps is not set: " + ("eps=16 (1/255 units) or eps=16/255" if unit == CONFIG else
                                                "create_attack needs eps, a fraction of the [0,1] range, e.g. 16/255"))
    eps = check_config_eps(eps, norm) if unit == CONFIG else float(api_length("eps", eps, norm))
    rules = dict(rules or {})
    if rule_text(alpha):
        rules["alpha"] = rule_text(alpha)
    alpha = _length(alpha, unit, eps, "alpha", norm)
    opt_kw = _lengths(OPTIMIZERS, optimizer, optimizer_kwargs or {}, unit, eps, norm, "optimizer", rules)
    est_kw = _lengths(ESTIMATORS, estimator, estimator_kwargs or {}, unit, eps, norm, "estimator", rules)
    tfs = {k: _lengths(TRANSFORMS, k, v or {}, unit, eps, norm, k, rules) for k, v in transforms.items()}
    if estimator in ESTIMATORS and "members" in ESTIMATORS.get(estimator).names() and est_kw.get("members") is None:
        est_kw["members"] = members   # CWA: K, the surrogate ensemble's size (one model fails its range)
    fit = fit_or_none(budget, optimizer=optimizer, estimator=estimator, estimator_kwargs=est_kw, transforms=tfs,
                      steps=int(steps), members=members)
    if fit is not None:
        clash = sorted(given & {fit.knob, *(k for k, _ in ESTIMATORS.get(estimator).cost.follow)})
        if clash:
            raise ConfigError(f"budget={budget} sets {', '.join(clash)} ({method or estimator}'s cost knob); pass the "
                              f"budget or {clash[0]}, not both")
        steps, est_kw = fit.steps, fit.estimator_kwargs
    knob = ESTIMATORS.get(estimator).cost if estimator in ESTIMATORS else None
    if alpha is None and knob is not None and knob.travel != 1.0:
        rules["alpha"] = f"{knob.travel:g}ε/T"   # CWA's rule, whichever side computes it
    if alpha is None and unit == CONFIG:   # travel·ε/T in 1/255 units, as the columns show it (the API: the loop)
        alpha = (knob.travel if knob is not None else 1.0) * eps / int(steps)
    if alpha is not None:
        check_range("alpha", alpha, alpha > 0, f"alpha > 0 ({unit} units), a rule of eps (eps/10) or null")
    return AttackSpec(unit=unit, optimizer=optimizer, optimizer_kwargs=opt_kw, estimator=estimator,
                      estimator_kwargs=est_kw, transforms=tfs, eps=float(eps), steps=int(steps),
                      alpha=None if alpha is None else float(alpha), norm=norm, targeted=bool(targeted), rules=rules,
                      budget=fit.record() if fit is not None else None)


def apply_preset(name: str, opt: str, est: str, loop_kw: Dict[str, Any], opt_kw: Dict[str, Any],
                 est_kw: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, str]]:
    """The API's reading of conf/method/NAME.yaml: the file's settings under the caller's (T and α into
    ``loop_kw``; the optimizer's and the estimator's, each only while the preset's part is the one in
    use), converted from the file's 1/255 units to fractions, rules of ε resolved at the caller's ε."""
    preset = METHOD_PRESETS.get(name, {})
    eps = loop_kw.get("eps")
    if "steps" in preset:
        loop_kw.setdefault("steps", preset["steps"])
    rules: Dict[str, str] = {}

    def from_file(key, v):
        if rule_text(v):
            rules[key] = rule_text(v)
        if isinstance(v, str) and eps is None:
            raise ConfigError("create_attack needs eps (a fraction of the [0,1] range, e.g. 16/255)")
        return _length(v, API, float(eps), key, "l2") if isinstance(v, str) else v / PIXEL

    if "alpha" in preset and "alpha" not in loop_kw:
        loop_kw["alpha"] = from_file("alpha", preset["alpha"])
    for group, part, registry, given in (("optimizer", opt, OPTIMIZERS, opt_kw), ("estimator", est, ESTIMATORS, est_kw)):
        if part != METHODS[name][0 if group == "optimizer" else 1]:
            continue   # the preset's settings of a part apply to that part only
        decl = registry.get(part)
        own = {k: v for k, v in dict(preset.get(group) or {}).items() if k != "name" and k not in given}
        given.update({k: from_file(f"{group}.{k}", v) if decl.param(k).length and v is not None else v
                      for k, v in own.items()})
    return opt_kw, est_kw, rules


__all__ = ["AttackSpec", "resolve_spec", "apply_preset", "METHODS", "METHOD_PRESETS", "CONFIG", "API"]


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
