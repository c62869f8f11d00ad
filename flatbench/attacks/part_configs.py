"""The config files of the parts (``conf/optimizer``, ``conf/estimator``, ``conf/transforms``), written
from the parts' declarations: a part's defaults live in its declaration only.

Each file names its part and lists its parameters with their ranges, so that a user sees what can be
set and ``estimator.beta=0.3`` is an override of a key that exists. An optimizer's or estimator's file
writes the declared defaults (lengths in 1/255 units). A transform's file writes ``null`` for every
parameter, its default in the comment: null is "the part's own default, or the value an experiment's
``transform_defaults`` gives it", and only a null can be filled that way.

``python scripts/part_configs.py`` rewrites them; ``tests/test_parts.py`` fails when one differs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from flatbench.attacks.parts import Declaration, Param

GROUPS = ("optimizer", "estimator", "transforms")
COMMENT_AT = 25   # the column the parameter comments start at, as the hand-written files had them


def value_text(value: Any) -> str:
    """A scalar as YAML writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def config_value(p: Param, value: Any) -> Any:
    """A declared value in config units (lengths in 1/255 units)."""
    if p.length and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = round(float(value) * 255.0, 6)
        return int(value) if value.is_integer() else value
    return value


def param_comment(p: Param, transform: bool) -> str:
    parts = []
    if transform:
        parts.append(f"default {value_text(config_value(p, p.default))}")
    parts.append(p.allowed if p.allowed else " | ".join(p.choices))
    if p.length:
        parts.append("1/255 units")
    return "; ".join(x for x in parts if x)


def _line(text: str, comment: str) -> str:
    return f"{text.ljust(COMMENT_AT - 1)} # {comment}" if comment else text


def part_config(decl: Declaration) -> str:
    """The config file of one part."""
    module = decl.make.__module__.replace(".", "/") + ".py"
    head = [decl.summary,
        f"Written from its declaration ({module}) by `python scripts/part_configs.py`:",
        "change the declaration, not this file (tests/test_parts.py checks that they agree)."]
    lines = [f"# {h}" for h in head]
    if decl.kind == "transform":
        lines.append(f"{decl.name}:" if decl.params else f"{decl.name}: {{}}")
        lines += [_line(f"  {p.name}: null", param_comment(p, True)) for p in decl.params]
    else:
        lines.append(f"name: {decl.name}")
        lines += [_line(f"{p.name}: {value_text(config_value(p, p.default))}", param_comment(p, False))
                  for p in decl.params]
    return "\n".join(lines) + "\n"


def _registry(group: str):
    from flatbench.attacks import ESTIMATORS, OPTIMIZERS, TRANSFORMS

    return {"optimizer": OPTIMIZERS, "estimator": ESTIMATORS, "transforms": TRANSFORMS}[group]


def expected(conf_dir: Path) -> Dict[Path, str]:
    """Every part's config file, by path under ``conf_dir``."""
    out = {}
    for group in GROUPS:
        parts = _registry(group)
        for name in parts.names():
            out[Path(conf_dir) / group / f"{name}.yaml"] = part_config(parts.get(name))
    return out


def stale(conf_dir: Path) -> List[str]:
    """The files that differ from their declaration, are missing, or name no declared part."""
    want = expected(conf_dir)
    have = {f for g in GROUPS for f in (Path(conf_dir) / g).glob("*.yaml")}
    out = [str(f) for f, text in want.items() if not f.is_file() or f.read_text() != text]
    return sorted(out + [f"{f} (no such part)" for f in have - set(want)])


def write(conf_dir: Path) -> List[Path]:
    """Write every part's config file; the ones that changed."""
    changed = []
    for f, text in expected(conf_dir).items():
        if not f.is_file() or f.read_text() != text:
            f.write_text(text)
            changed.append(f)
    return changed
