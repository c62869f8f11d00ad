"""One cell's settings, typed and checked once: what the stages read instead of the raw config.

:func:`load_settings` turns a composed config into :class:`Settings` at startup, so that every
wrong key, name or value fails before anything is built, crafted or written: the cell's semantic
settings (:class:`~flatbench.cell.settings.CellSettings`), how it runs (:class:`RunSettings`), where its
files go (:class:`Paths`), its target zoo, its flatness settings and its logger. From them there is
one builder of the attack (:meth:`Settings.build_attack`), used by the cell, the plan, the sweep's
progress and ``flatbench describe``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from omegaconf import DictConfig, OmegaConf

from flatbench.cell.settings import Paths, RunSettings, Settings
from flatbench.core.units import px
from flatbench.entry.config import as_container, chunk_setting, resolve
from flatbench.core.registry import ConfigError
from flatbench.cell.settings import ALL_ROLES
from flatbench.entry.target_zoo import parse_targets


def flatness_settings(node: Any):
    """The flatness group as :class:`flatbench.measures.flatness.FlatnessSettings` ([0,1] units), or None when off."""
    from dataclasses import fields

    from flatbench.measures.flatness import FlatnessSettings
    from flatbench.core.registry import suggest

    node = dict(as_container(node) or {})
    if not node.pop("enabled", False):
        return None
    valid = [f.name for f in fields(FlatnessSettings)]
    for key in node:
        if key not in valid:
            raise ConfigError(f"flatness: unknown key {key!r}. Valid keys: {', '.join(valid)}.{suggest(key, valid)}")
    if "rho" in node:
        node["rho"] = px(node["rho"])
    if node.get("model") is not None:   # a model name, checked now as the targets are (nothing is built)
        from flatbench.models import source_of

        try:
            source_of(str(node["model"])).classes(str(node["model"]))
        except ConfigError as exc:
            raise ConfigError(f"flatness.model={node['model']!r}: {exc}") from None
    return FlatnessSettings(**node).check()


def check_objective(objective: str, zoo: Dict[str, Dict[str, Any]]) -> None:
    """At startup: the objective names a role, ``all`` or one of this cell's targets."""
    if objective in ("all", *ALL_ROLES) or objective in zoo:
        return
    raise ConfigError(f"objective={objective!r} is neither a role nor a target of this cell; allowed: all, "
                      f"{', '.join(ALL_ROLES)}, or a target key ({', '.join(zoo)})")


PATH_KEYS = ("output_dir", "zoo_dir", "data_dir", "cache_dir", "tuning_file")   # conf/paths/default.yaml


def load_settings(cfg: DictConfig) -> Settings:
    """Check the whole config and return the cell's settings (see the module docstring)."""
    cell = resolve(cfg)
    targets = parse_targets(cfg.targets)
    run = RunSettings(
        name=str(cfg.name), pretrained=bool(cfg.pretrained), preprocess=str(cfg.get("preprocess", "own")),
        quantize=str(cfg.get("quantize", "round")), batch_size=int(cfg.batch_size), chunk=chunk_setting(cfg),
        memory_budget_mb=cfg.get("memory_budget_mb"), amp=cfg.get("amp"),
        channels_last=cfg.get("channels_last", "auto"), compile=bool(cfg.get("compile")), device=str(cfg.device),
        progress=bool(cfg.progress), save_images=bool(cfg.save_images), force=bool(cfg.get("force", False)),
        objective=str(cfg.get("objective", "black-box")))
    check_objective(run.objective, targets)
    flat_node = as_container(cfg.get("flatness")) or {}
    flat = flatness_settings(flat_node)
    if flat_node.get("model", "") is None:   # the default (the surrogate): recorded as before the key existed
        flat_node = {k: v for k, v in flat_node.items() if k != "model"}
    paths = cfg.get("paths") or {}
    unknown = sorted(set(paths) - set(PATH_KEYS))
    if unknown:
        from flatbench.core.registry import suggest

        raise ConfigError(f"paths: unknown key {unknown[0]!r}. Valid keys: {', '.join(PATH_KEYS)}.{suggest(unknown[0], PATH_KEYS)}")
    zoo_dir, cache_dir = paths.get("zoo_dir"), paths.get("cache_dir")
    return Settings(
        cell=cell, run=run,
        paths=Paths(output_dir=Path(str(paths.get("output_dir", "outputs"))), cache_dir=Path(str(cache_dir)) if cache_dir else None,
                    zoo_dir=Path(zoo_dir) if zoo_dir else None, tuning_file=paths.get("tuning_file")),
        targets=targets, flatness=flat, flatness_node=flat_node if flat_node.get("enabled") else None,
        logger=dict(as_container(cfg.get("logger")) or {}),
        config=lambda: OmegaConf.to_container(cfg, resolve=True), choices=_choices())


def _choices() -> Dict[str, str]:
    """The config file Hydra chose in each group ({} outside a Hydra app: the API, the plan)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {g: str(c) for g, c in HydraConfig.get().runtime.choices.items()}
    except ValueError:
        return {}
