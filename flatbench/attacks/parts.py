"""Parts declare themselves: each optimizer, estimator and transform states, in one place, its
registry name, its label and its parameters with their defaults and ranges.

Everything else reads that declaration: the factories (:meth:`Parts.build` checks names,
types and ranges with one message each), ``create_attack``'s keyword routing, the config
files (a test fails when a YAML default disagrees), ``flatbench list methods``, the printed
loop (``Attack.describe``), the result columns and the cell id, which names each part by its
registry name and its declared parameters, never by a class name or by ``vars()``.

A new part is a class with ``__call__`` and ``describe`` plus one :meth:`Parts.declare` call;
the loop needs no change (tests/test_attacks.py adds one in a test).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from flatbench.core.registry import ConfigError, Registry, check_range, suggest
from flatbench.core.units import written_fraction

NOTHING = object()   # Param.added_at when the parameter was there from the start


@dataclass(frozen=True)
class Param:
    """One parameter of a part.

    ``kind``: number | integer | bool | choice (one of ``choices``). ``ok`` tests the range and
    ``allowed`` says it in words. ``length``: a length, written in 1/255 units in configs and
    columns and as a fraction of [0,1] in the API. ``null``: what a null value stands for, when
    the default is null ("alpha": the attack's step size, bound by the loop). ``added_at``: for a
    parameter added after cells were stored, the value they all had; at that value it is left out
    of the cell id (it is still a column), so they keep their ids and are never relabelled.
    """

    name: str
    default: Any
    kind: str = "number"
    ok: Optional[Callable[[Any], bool]] = None
    allowed: str = ""
    choices: Tuple[str, ...] = ()
    length: bool = False
    null: str = ""
    added_at: Any = NOTHING

    def check(self, value: Any, where: str) -> Any:
        """The value converted to the parameter's type, or a ConfigError naming ``where.name``."""
        key = f"{where}.{self.name}"
        if value is None:
            if self.default is None:
                return None
            value = self.default
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{key}={value!r} has the wrong type; expected a bool")
        elif self.kind == "integer":
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
                raise ConfigError(f"{key}={value!r} has the wrong type; expected an integer")
            value = int(value)
        elif self.kind == "number":
            if self.length and written_fraction(value) is not None:   # "3.2/255", as written
                value = written_fraction(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key}={value!r} has the wrong type; expected a number")
            value = float(value)
        elif self.kind == "choice":
            check_range(key, value, value in self.choices, " | ".join(self.choices))
        if self.ok is not None:
            check_range(key, value, bool(self.ok(value)), self.allowed)
        return value


@dataclass(frozen=True)
class Knob:
    """What scales a part's cost, for ``budget=B`` (:mod:`flatbench.attacks.budget`).

    ``name``: ``steps`` (the loop's T; α = travel·ε/T follows wherever α is left null) or one of the
    part's own integer parameters (PGN's ``n_samples``). ``follow``: the part's parameters set
    from the knob's value with it (RAP's late start, T//4), as (name, function) pairs. The cost
    itself is not written here: it is what ``evals_per_image`` counts at each value.
    """

    name: str
    follow: Tuple[Tuple[str, Callable[[int], Any]], ...] = ()
    text: str = ""
    travel: float = 1.0   # with the steps as knob, a null α is travel·ε/T (CWA: 2ε/T)


@dataclass(frozen=True)
class Declaration:
    """What a part is, by name: see the module docstring.

    ``published_with``/``published_label`` (estimators): the optimizer of the method's paper and
    the method's name with it (PGN is PGN with MI-FGSM's update, VMI is VMI-FGSM); with any
    other optimizer the label is ``OPTIMIZER+LABEL``. A part without a label (the plain
    gradient) adds nothing to the method's label.
    """

    kind: str
    name: str
    label: str
    make: Callable[..., Any]
    params: Tuple[Param, ...] = ()
    doc: str = ""
    published_with: Optional[str] = None
    published_label: Optional[str] = None
    cost: Optional[Knob] = None
    differences: Tuple[str, ...] = ()   # each known difference from the public code, one line (docs/methods.md)

    @property
    def summary(self) -> str:
        return self.doc.strip().split("\n")[0]

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def names(self) -> List[str]:
        return [p.name for p in self.params]

    def defaults(self) -> Dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def where(self) -> str:
        return f"transforms.{self.name}" if self.kind == "transform" else self.kind

    def settings(self, given: Mapping[str, Any]) -> Dict[str, Any]:
        """Every parameter's value: the given ones checked, the rest (and nulls) the defaults."""
        valid = self.names()
        for key in given:
            if key not in valid:
                raise ConfigError(f"{self.kind} {self.name!r}: unknown key {key!r}. Valid keys: "
                                  f"{', '.join(sorted(valid)) or '(none)'}.{suggest(key, valid)}")
        return {p.name: p.check(given.get(p.name), self.where()) for p in self.params}

    def build(self, **given: Any) -> Any:
        part = self.make(**self.settings(given))
        part.declaration = self
        return part


def method_label(opt: Declaration, est: Declaration, transforms=()) -> str:
    """A method's name from its parts' declarations: an estimator with the optimizer of its paper is
    its published name (PGN, VMI-FGSM), with another optimizer OPTIMIZER+LABEL; an estimator without
    a label (the plain gradient) leaves the optimizer's; the transforms' labels follow."""
    if not est.label:
        head = opt.label
    elif opt.name == est.published_with:
        head = est.published_label or est.label
    else:
        head = f"{opt.label}+{est.label}"
    return "+".join([head] + [t.label for t in transforms])


class Part:
    """What every part has through its declaration: ``name``, ``label``, ``params()``."""

    declaration: Declaration

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def label(self) -> str:
        return self.declaration.label

    def params(self) -> Dict[str, Any]:
        """The declared parameters with this part's values (result columns, cell id, list)."""
        return {p.name: getattr(self, p.name) for p in self.declaration.params}

    def check(self) -> None:
        """Check (and type) this part's values against its declaration. Each constructor calls
        it, so a part built directly (``DIM(prob=2)``) fails as a config or ``create_attack`` would."""
        for key, value in self.declaration.settings(self.params()).items():
            setattr(self, key, value)

    def bind(self, alpha: float) -> "Part":
        """This part with the parameters whose null stands for α set to ``alpha`` (a copy when
        anything changes; ``from_alpha`` names them, for the printed loop)."""
        nulls = [p.name for p in self.declaration.params if p.null == "alpha" and getattr(self, p.name) is None]
        if not nulls:
            return self
        part = copy.copy(self)
        for n in nulls:
            setattr(part, n, float(alpha))
        part.from_alpha = frozenset(nulls)
        return part

    from_alpha: frozenset = frozenset()


class Parts(Registry):
    """The declared parts of one kind, by name: a :class:`~flatbench.core.registry.Registry` whose items are
    declarations (a part's name, label, parameters with defaults and ranges, cost and documentation)."""

    twice = "declared twice"

    def declare(self, name: str, label: str, params: Tuple[Param, ...] = (), doc: str = "",
                published_with: Optional[str] = None, published_label: Optional[str] = None,
                cost: Optional[Knob] = None, differences: Tuple[str, ...] = ()):
        """Class decorator (or call with ``make=``): declares ``name``. A class declared once
        takes that declaration as its own, so that ``Class(...)`` knows its name too."""

        def deco(make):
            decl = Declaration(self.kind, name, label, make, tuple(params), doc or (make.__doc__ or ""),
                               published_with, published_label, cost, tuple(differences))
            self.add(name, decl)
            if isinstance(make, type) and "declaration" not in make.__dict__:
                make.declaration = decl
            return make

        return deco

    def get(self, name: str) -> Declaration:
        return super().get(name)

    def doc(self, name: str) -> str:
        return self.get(name).summary

    def build(self, name: str, /, **given: Any) -> Any:
        return self.get(name).build(**given)

