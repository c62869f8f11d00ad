"""String -> factory registries: names are flatbench's public interface.

Every configurable component (model, attack part, data set, defense, logger) is built by
name through a :class:`Registry`. Unknown names and unknown keyword arguments fail with a
message that lists the valid choices and suggests the closest one, so that a typo in a
config fails at startup instead of hours into a sweep.
"""
from __future__ import annotations

import difflib
import re
import inspect
from typing import Any, Callable, Dict, Iterable, List, Optional


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the valid choices."""


def shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) and value.is_integer() else repr(value)


def check_range(key: str, value, ok: bool, allowed: str) -> None:
    """The one form of a range error, wherever a value is checked: ``key=value is out of range;
    allowed: ...``."""
    if not ok:
        raise ConfigError(f"{key}={shown(value)} is out of range; allowed: {allowed}")


# The resize modes flatbench accepts wherever a setting names one (data sets, DIM): torch's
# F.interpolate modes that work on images of any size.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")


_ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|exc|obj):`~?\.?([^`]+)`")


def plain(doc: Optional[str]) -> str:
    """A docstring as help text: ``:mod:`.cells``` and the like read as the name they point at."""
    return _ROLE.sub(lambda m: m.group(1), doc or "")


def suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_kwargs(fn: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """Raise ConfigError if ``kwargs`` holds a name that ``fn`` does not accept."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in kwargs:
        if key not in valid:
            raise ConfigError(
                f"{where}: unknown key {key!r}. Valid keys: {', '.join(sorted(valid))}.{suggest(key, valid)}"
            )


def _expected(param) -> str:
    """'number', 'integer', 'bool', 'str' or '' (anything), from a parameter's annotation/default."""
    ann = param.annotation if isinstance(param.annotation, str) else getattr(param.annotation, "__name__", "")
    default = param.default
    if isinstance(default, bool) or ann == "bool":
        return "bool"
    if (isinstance(default, int) and not isinstance(default, bool)) or ann in ("int", "Optional[int]"):
        return "integer"
    if isinstance(default, float) or ann in ("float", "Optional[float]"):
        return "number"
    if isinstance(default, str) or ann in ("str", "Optional[str]"):
        return "str"
    return ""


def check_types(fn: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """Raise ConfigError when a value has the wrong type for the parameter it sets."""
    params = inspect.signature(fn).parameters
    for key, value in kwargs.items():
        if key not in params or value is None:
            continue
        want = _expected(params[key])
        ok = {"bool": isinstance(value, bool),
              "integer": isinstance(value, int) and not isinstance(value, bool)
              or (isinstance(value, float) and value.is_integer()),
              "number": isinstance(value, (int, float)) and not isinstance(value, bool),
              "str": isinstance(value, str), "": True}[want]
        if not ok:
            raise ConfigError(f"{where}: {key}={value!r} has the wrong type; expected {'a' if want != 'integer' else 'an'} {want}")


class Registry:
    """A named collection of one kind of extension point, the one registry kind of the package: data
    sets, defenses and loggers register factories here; the attack's parts (optimizers, estimators,
    transforms) are a :class:`~flatbench.attacks.parts.Parts`, which adds their declarations. Lookup,
    listing, the one-line description and the error for an unknown name are the same for every kind.
    ``None``-valued kwargs mean "the factory's default"."""

    twice = "registered twice"   # the error for a name given twice (Parts: "declared twice")

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, Any] = {}
        self._docs: Dict[str, str] = {}

    def add(self, name: str, item: Any, doc: str = "") -> Any:
        """Put ``item`` under ``name`` (once)."""
        if name in self._items:
            raise KeyError(f"{self.kind} {name!r} {self.twice}")
        self._items[name] = item
        self._docs[name] = doc
        return item

    def register(self, name: str, fn: Optional[Callable] = None, *, doc: str = ""):
        def deco(f: Callable) -> Callable:
            return self.add(name, f, doc or (inspect.getdoc(f) or "").split("\n")[0])

        return deco(fn) if fn is not None else deco

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def names(self) -> List[str]:
        return sorted(self._items)

    def in_order(self) -> List[Any]:
        """The items in the order they were added (where the order means something: the report's outputs)."""
        return list(self._items.values())

    def doc(self, name: str) -> str:
        """The one-line description of ``name`` (its factory's docstring, first line)."""
        self.get(name)
        return self._docs[name]

    def get(self, name: str) -> Any:
        if name not in self._items:
            raise ConfigError(
                f"unknown {self.kind} {name!r}. Valid choices: {', '.join(self.names())}.{suggest(name, self._items)}"
            )
        return self._items[name]

    def build(self, name: str, /, **kwargs: Any) -> Any:
        fn = self.get(name)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        check_kwargs(fn, kwargs, f"{self.kind} {name!r}")
        check_types(fn, kwargs, f"{self.kind} {name!r}")
        return fn(**kwargs)
