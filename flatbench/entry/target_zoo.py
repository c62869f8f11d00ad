"""The target zoo of a cell (``targets=``, conf/targets/*.yaml): each entry's keys and role."""
from __future__ import annotations

from typing import Any, Dict

from flatbench.entry.config import as_container
from flatbench.cell.settings import ENTRY_KEYS, ROLES
from flatbench.core.registry import ConfigError

def parse_targets(node: Any) -> Dict[str, Dict[str, str]]:
    zoo = as_container(node) or {}
    if not isinstance(zoo, dict) or not zoo:
        raise ConfigError("targets: the target zoo is empty; choose one with targets=NAME")
    out = {}
    for key, entry in zoo.items():
        entry = {"model": entry} if isinstance(entry, str) else dict(entry or {})
        unknown = set(entry) - set(ENTRY_KEYS)
        if unknown:
            raise ConfigError(f"targets.{key}: unknown key(s) {sorted(unknown)}; valid: {', '.join(ENTRY_KEYS)}")
        if entry.get("defense") is not None and not isinstance(entry["defense"], dict):
            raise ConfigError(f"targets.{key}.defense must be a mapping like {{name: jpeg, quality: 75}}")
        entry.setdefault("model", key)
        entry.setdefault("role", "normal")
        if entry["role"] not in ROLES:
            raise ConfigError(f"targets.{key}.role={entry['role']!r}; valid: {', '.join(ROLES)}")
        out[key] = entry
    return out
