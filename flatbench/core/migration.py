"""The one table of old names: every name flatbench once used, what it is now, and what a cell
made under the old name means today. Consulted wherever an old name can arrive: command-line
overrides (before Hydra starts), a user's config files (composition errors), the overrides
stored with an old cell (``flatbench evaluate``), ``create_attack``'s keywords, an old cell's
settings (when a run replaces it) and an old cell's columns (the report).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, Mapping, Optional

# flatbench 0.2 gave each concept one name: the config group that chose the update
# rule was `attack`, which is also the whole method's column; the one that chose the gradient
# estimator was `penalty`, which also held VMI and the plain gradient (`none`).
RENAMED_GROUPS = {"attack": "optimizer", "penalty": "estimator"}          # since 0.2
RENAMED_VALUES = {("estimator", "none"): "plain"}                         # since 0.2
RENAMED_COLUMNS = {"penalty": "estimator"}                                # since 0.2, also penalty.* -> estimator.*
RENAMED_KEYWORDS = {"penalty": "estimator"}                               # create_attack, since 0.2 (refused)
# Renamed in 0.3 and still read under the old name, with a note: the images per forward pass
# were `max_batch` (config, API), `cap` (the loop) and `chunk` (the column); now `chunk` everywhere.
RENAMED_KEYS = {"max_batch": "chunk"}                                     # config keys and keywords, since 0.3
RENAMED_HINT = ("flatbench 0.2 renamed the config groups attack -> optimizer and penalty -> estimator "
                "(estimator=none -> estimator=plain)")


def old_override(args: Iterable[str]) -> Optional[str]:
    """The first command-line override that uses an old group name or value, with its new spelling."""
    for arg in args:
        if "=" not in arg and not arg.startswith("~"):
            continue
        key, eq, value = arg.partition("=")
        m = re.match(r"^([+~]*)((?:hydra\.sweeper\.params\.)?)(\w+)(.*)$", key)
        if not m:
            continue
        prefix, sweep, head, rest = m.groups()
        if head in RENAMED_GROUPS:
            new = RENAMED_GROUPS[head]
            value = RENAMED_VALUES.get((new, value), value) if not rest else value
            return f"{arg}: {RENAMED_HINT}; write {prefix}{sweep}{new}{rest}{eq}{value}"
        if not rest and (head, value) in RENAMED_VALUES:
            return f"{arg}: the plain gradient is {head}={RENAMED_VALUES[(head, value)]} since flatbench 0.2"
    return None


def renamed_key_note(old: str) -> str:
    return f"{old} is {RENAMED_KEYS[old]} since flatbench 0.3; read as {RENAMED_KEYS[old]}"


def current_overrides(args: Iterable[str]) -> tuple:
    """Command-line overrides with renamed keys under their new names, and a note for each."""
    out, notes = [], []
    for arg in args:
        key, eq, value = arg.partition("=")
        m = re.match(r"^([+~]*)((?:hydra\.sweeper\.params\.)?)(\w+)$", key) if eq else None
        if m and m.group(3) in RENAMED_KEYS:
            new = f"{m.group(1)}{m.group(2)}{RENAMED_KEYS[m.group(3)]}={value}"
            notes.append(f"{arg}: {renamed_key_note(m.group(3))} ({new})")
            arg = new
        out.append(arg)
    return out, notes


def current_keywords(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """create_attack's keywords with renamed ones under their new names (a FutureWarning each)."""
    import warnings

    out = dict(kwargs)
    for old, new in RENAMED_KEYS.items():
        if old in out:
            if new in out:
                raise ValueError(f"create_attack: {old}= and {new}= name the same setting ({renamed_key_note(old)})")
            warnings.warn(f"create_attack: {renamed_key_note(old)}", FutureWarning, stacklevel=3)
            out[new] = out.pop(old)
    return out


def old_config_text(text: str) -> Optional[str]:
    """A hint when a composition error names an old group (a user's config file written for 0.1)."""
    names = "|".join(RENAMED_GROUPS)
    if re.search(rf"'(?:{names})'|\b(?:{names})/", text):
        return RENAMED_HINT + ": update the config files"
    return None


def old_keyword(kwargs: Mapping[str, Any]) -> Optional[str]:
    """create_attack's message for a keyword that has another name now."""
    for old, new in RENAMED_KEYWORDS.items():
        if old in kwargs:
            return (f"create_attack: {old}= is {new}= since flatbench 0.2 (one name per concept; the plain gradient "
                    f"is {new}='plain')")
    return None


def old_cell(semantic: Dict[str, Any]) -> Optional[str]:
    """Why a stored cell's settings hash to another id under this version, when they do."""
    if any(k in semantic for k in RENAMED_GROUPS):
        return "it was made by flatbench 0.1, which called the estimator `penalty`"
    for name, params in semantic.get("transforms") or []:
        if name == "admix" and "partners" in (params or {}):
            return ("it was made by flatbench 0.2, whose Admix cell ids held an empty `partners` entry (0.3 hashes "
                    "only the parts' declared parameters)")
    return None


def current_columns(df):
    """An old cell's rows under today's column names, in memory (the file is not touched): the
    settings are the same, so old and new cells of one setting share a table row."""
    renamed = {c: new + c[len(old):] for c in df.columns for old, new in RENAMED_COLUMNS.items()
               if (c == old or c.startswith(old + ".")) and new not in df.columns}
    if not renamed:
        return df
    df = df.rename(columns=renamed)
    for (column, old), new in RENAMED_VALUES.items():
        if column in df.columns:
            df[column] = df[column].replace({old: new})
    return df

