"""One cell's settings, typed and checked once: what the stages read instead of the raw config.

:func:`load_settings` turns a composed config into :class:`Settings` at startup, so that every
wrong key, name or value fails before anything is built, crafted or written: the cell's semantic
settings (:class:`~flatbench.config.CellSettings`), how it runs (:class:`RunSettings`), where its
files go (:class:`Paths`), its target zoo, its flatness settings and its logger. From them there is
one builder of the attack (:meth:`Settings.build_attack`), used by the cell, the plan, the sweep's
progress and ``flatbench describe``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from omegaconf import DictConfig, OmegaConf

from .config import CellSettings, as_container, chunk_setting, px, resolve
from .registry import ConfigError
from .target_zoo import ALL_ROLES, parse_targets


@dataclass(frozen=True)
class RunSettings:
    """How the cell runs. ``pretrained``, ``preprocess``, ``quantize`` and ``batch_size`` also enter
    the cell id (:func:`flatbench.cell.plan.hashed_settings` says why); the rest does not."""

    name: str
    pretrained: bool
    preprocess: str
    quantize: str
    batch_size: int
    chunk: Any
    memory_budget_mb: Optional[float]
    amp: Optional[str]
    channels_last: Any
    compile: bool
    device: str
    progress: bool
    save_images: bool
    force: bool
    objective: str


@dataclass(frozen=True)
class Paths:
    """Where the cell's files go (``conf/paths``)."""

    output_dir: Path
    cache_dir: Optional[Path]
    zoo_dir: Optional[Path]
    tuning_file: Optional[str]


@dataclass(frozen=True)
class Settings:
    """Everything one cell reads, resolved from its config by :func:`load_settings`."""

    cell: CellSettings
    run: RunSettings
    paths: Paths
    targets: Dict[str, Dict[str, Any]]   # target key -> entry (model, role, ...): parse_targets
    flatness: Any                        # FlatnessSettings ([0,1] units), or None when off
    flatness_node: Optional[Dict[str, Any]]   # the flatness group as configured (cell.json), None when off
    logger: Dict[str, Any]
    config: Callable[[], Dict[str, Any]]   # the whole composed config, resolved (the logger's record of the run)
    choices: Dict[str, str]              # the config file chosen in each group (Hydra's runtime), for error messages

    def build_attack(self, model=None):
        """The cell's attack: its spec (:mod:`flatbench.attacks.spec`) with the run's sizing settings."""
        return self.cell.spec.build(model, chunk=self.run.chunk, memory_budget_mb=self.run.memory_budget_mb,
                                    amp=self.run.amp, channels_last=self.run.channels_last,
                                    tuning_file=self.paths.tuning_file)

    def model_options(self, progress: Optional[bool] = None) -> Dict[str, Any]:
        """The keyword arguments of :func:`flatbench.models.load_model` for this cell's models."""
        return dict(zoo_dir=self.paths.zoo_dir, progress=self.run.progress if progress is None else progress,
                    pretrained=self.run.pretrained, preprocess=self.run.preprocess)


def flatness_settings(node: Any):
    """The flatness group as :class:`flatbench.flatness.FlatnessSettings` ([0,1] units), or None when off."""
    from dataclasses import fields

    from .flatness import FlatnessSettings
    from .registry import suggest

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
        from .models import source_of

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
        from .registry import suggest

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
