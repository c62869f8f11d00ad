"""Equal compute: ``budget=B`` gradient evaluations per image.

Methods cost very different amounts (MI-FGSM 10 gradient evaluations per image, PGN 400, RAP 2,800),
so a table of their presets compares compute as much as method. A budget sets each method's own
cost knob, the one its estimator declares (:class:`flatbench.attacks.parts.Knob`: T for the plain
gradient, GNP, RAP, ANDA and CWA; N for PGN, GRA, MEF, VMI and EMI), to the largest value whose cost
stays within B, and requires that cost to be at least 0.8·B. The cost of a value is what the parts count
(``passes_per_image`` per step times the input transforms' copies), the very number ``flatbench
plan`` predicts and ``grad_evals`` records, so nothing here is a separate cost model. The unit is one
forward+backward pass of one model: a gradient of an ensemble of K models costs K, for every method.

The budget resolves to ordinary settings before anything is hashed: ``budget=400`` for PGN and
``n_samples=20`` are one cell. Pure: no I/O, no model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from flatbench.core.registry import ConfigError
from flatbench.attacks.estimators import ESTIMATORS
from flatbench.attacks.optimizers import OPTIMIZERS
from flatbench.attacks.parts import method_label
from flatbench.attacks.transforms import TRANSFORMS, InputTransform

LOW = 0.8   # the least share of the budget a cell must spend


@dataclass
class Fit:
    """What a budget resolved to: the knob's value, the steps and estimator settings that carry it,
    and the evaluations per image they cost (``flatbench plan`` shows ``knob=value``)."""

    budget: int
    knob: str
    value: int
    steps: int
    estimator_kwargs: Dict[str, Any] = field(default_factory=dict)
    per_image: int = 0

    def text(self) -> str:
        return (f"budget = {self.budget} gradient evaluations per image: {self.knob} = {self.value}"
                f" ({self.per_image} per image)")

    def record(self) -> Dict[str, Any]:
        return {"budget": self.budget, "knob": self.knob, "value": self.value, "per_image": self.per_image}


def check_budget(budget: Any) -> int:
    ok = (not isinstance(budget, bool) and isinstance(budget, (int, float))
          and float(budget).is_integer() and budget >= 1)
    if not ok:
        raise ConfigError(f"budget={budget!r} is out of range; valid: an integer >= 1 (gradient evaluations per image) "
                          "or null (the method's own settings)")
    return int(budget)


def evals_per_image(estimator: str, estimator_kwargs: Mapping[str, Any], transforms: Mapping[str, Mapping[str, Any]],
                    steps: int, members: int = 1) -> int:
    """Gradient evaluations per image of these settings, in single-model passes (an ensemble of
    ``members`` models costs that many per gradient): each step's count times the copies."""
    est = ESTIMATORS.build(estimator, **dict(estimator_kwargs))
    copies = 1
    for name, kw in transforms.items():
        t = TRANSFORMS.build(name, **dict(kw or {}))
        if isinstance(t, InputTransform):
            copies *= t.copies
    return copies * sum(est.passes_per_image(t, members) for t in range(steps))


def fit_budget(budget: Any, *, optimizer: str, estimator: str, estimator_kwargs: Mapping[str, Any],
               transforms: Mapping[str, Mapping[str, Any]], steps: int, members: Optional[int] = None) -> Fit:
    """The knob's largest value whose cost is within ``budget``; a ConfigError (one line) when even
    its smallest value costs more, or when no value lands in [0.8·B, B]. ``members``: the surrogate
    ensemble's size (None: one model); every gradient of the ensemble costs that many passes."""
    budget = check_budget(budget)
    decl = ESTIMATORS.get(estimator)
    label = method_label(OPTIMIZERS.get(optimizer), decl, [TRANSFORMS.get(t) for t in transforms])
    knob = decl.cost
    if knob is None:
        raise ConfigError(f"budget={budget}: estimator {estimator!r} declares no cost knob (Knob in its declaration); "
                          "set its settings yourself or declare one")
    base = {k: v for k, v in estimator_kwargs.items()}

    def settings(v: int):
        kw = dict(base)
        if knob.name != "steps":
            kw[knob.name] = v
        for name, rule in knob.follow:
            kw[name] = rule(v)
        return (v if knob.name == "steps" else steps), kw

    def cost(v: int) -> int:
        t, kw = settings(v)
        return evals_per_image(estimator, kw, transforms, t, members or 1)

    smallest = cost(1)
    if smallest > budget:
        at = "" if knob.name == "steps" else f" at T = {steps}"
        raise ConfigError(f"budget={budget}: the smallest budget {label} can meet{at} is {smallest} gradient evaluations "
                          f"per image ({knob.name}=1)")
    # cost(v) >= v for both kinds of knob (every step and every neighbour costs at least one), so v <= budget.
    lo, hi = 1, budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    spent = cost(lo)
    if spent < LOW * budget:
        raise ConfigError(f"budget={budget}: no {knob.name} puts {label} between {LOW * budget:g} and {budget} gradient "
                          f"evaluations per image; the nearest are {spent} ({knob.name}={lo}) and {cost(lo + 1)} "
                          f"({knob.name}={lo + 1})")
    t, kw = settings(lo)
    return Fit(budget, knob.name, lo, t, kw, spent)


def fit_or_none(budget: Optional[Any], **settings: Any) -> Optional[Fit]:
    return None if budget is None else fit_budget(budget, **settings)
