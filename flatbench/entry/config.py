"""The config schema and cell settings; the units themselves are :mod:`flatbench.core.units`.

Hydra composes the YAML under ``conf/`` on top of :class:`FlatbenchConfig`, so an unknown
top-level key or a wrong type fails at composition. Group contents (optimizer, estimator,
transforms, data, logger) are checked against the signature of the factory they name, so
an unknown key there fails at startup with the list of valid keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from flatbench.cell.settings import CellSettings
from flatbench.attacks.checks import check_loop_settings, check_snapshots
from flatbench.core.registry import ConfigError, check_range
from flatbench.core.units import check_config_eps


@dataclass
class FlatbenchConfig:
    data: Dict[str, Any] = field(default_factory=dict)
    targets: Dict[str, Any] = field(default_factory=dict)
    optimizer: Dict[str, Any] = field(default_factory=dict)
    estimator: Dict[str, Any] = field(default_factory=dict)
    transforms: Dict[str, Any] = field(default_factory=dict)
    transform_defaults: Dict[str, Any] = field(default_factory=dict)
    logger: Dict[str, Any] = field(default_factory=dict)
    paths: Dict[str, Any] = field(default_factory=dict)
    flatness: Dict[str, Any] = field(default_factory=dict)
    name: str = "default"
    surrogate: Any = "digits-cnn"
    pretrained: bool = True
    eps: Optional[Any] = None     # 1/255 units (16) or a written fraction (16/255): flatbench/core/units.py
    steps: int = 10
    budget: Optional[Any] = None  # gradient evaluations per image: sets the method's cost knob (attacks/budget.py)
    snapshots: Any = field(default_factory=list)  # steps whose examples are also kept and evaluated (not in cell_id)
    alpha: Optional[Any] = None   # a number (1/255 units), a rule of eps (eps/10: flatbench/attacks/scaling.py), or null: eps/steps
    norm: str = "linf"
    targeted: bool = False
    target_rule: str = "dataset"
    seed: int = 0
    n_images: Optional[Any] = None   # a count, or null / "all" for the whole split
    batch_size: int = 64
    chunk: Any = "auto"
    max_batch: Any = None  # 0.2's name of chunk, in a user's config files: read as chunk (migration.RENAMED_KEYS)
    memory_budget_mb: Optional[float] = None
    amp: Optional[str] = None
    preprocess: str = "own"
    quantize: str = "round"
    channels_last: Any = "auto"
    compile: bool = False
    device: str = "auto"
    progress: bool = True
    save_images: bool = True
    force: bool = False
    objective: str = "black-box"


def register_schema() -> None:
    ConfigStore.instance().store(name="flatbench_schema", node=FlatbenchConfig)


TARGET_RULES = ("dataset", "random", "least_likely")


def as_container(node: Any) -> Any:
    """A config node as plain Python containers (resolved); other values as they are."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def surrogate_names(value: Any) -> List[str]:
    value = as_container(value)
    names = [value] if isinstance(value, str) else list(value or [])
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"surrogate must be a model name or a list of names, got {value!r}")
    return names


def split_node(node: Any, where: str) -> tuple:
    node = dict(as_container(node) or {})
    if "name" not in node:
        raise ConfigError(f"{where}: missing 'name'")
    name = node.pop("name")
    return name, node


def resolve(cfg: DictConfig) -> CellSettings:
    """Validate the top-level values and return the cell's settings (nulls resolved)."""
    check_hydra_targets(cfg)
    data = dict(as_container(cfg.data) or {})
    if "name" not in data:
        raise ConfigError("data: missing 'name'")
    eps = cfg.eps if cfg.eps is not None else data.get("default_eps")
    if eps is None:
        raise ConfigError("eps is null and the data config has no default_eps")
    eps = check_config_eps(eps, cfg.norm)   # also in resolve_spec; here first, for the range checks below
    if cfg.norm == "l2":
        # An L2 radius in 1/255 units: ImageNet papers use a few thousand (e.g. 16·√(224·224·3)/4 ≈ 1552).
        check_range("eps", eps, 0 < eps, "eps > 0 (an L2 radius in 1/255 units) for norm=l2")
    else:
        check_range("eps", eps, 0 < eps <= 255, "0 < eps <= 255 (1/255 units) for norm=linf")
    if cfg.get("max_batch") is not None:
        import logging

        from flatbench.core.migration import renamed_key_note

        logging.getLogger("flatbench").warning("max_batch=%s: %s", cfg.max_batch, renamed_key_note("max_batch"))
    check_loop_settings(steps=cfg.steps, norm=cfg.norm, chunk=chunk_setting(cfg),
                        memory_budget_mb=cfg.get("memory_budget_mb"), amp=cfg.get("amp"),
                        channels_last=cfg.get("channels_last", "auto"))
    from flatbench.attacks.spec import CONFIG, resolve_spec

    opt, opt_kw = split_node(cfg.optimizer, "optimizer")
    est, est_kw = split_node(cfg.estimator, "estimator")
    surrogates = surrogate_names(cfg.surrogate)
    # budget=B sets the method's cost knob (T or N) before anything is hashed: the cell is the cell of
    # the settings it resolved to, so budget=400 for PGN and n_samples=20 are one cell.
    spec = resolve_spec(unit=CONFIG, optimizer=opt, optimizer_kwargs=opt_kw, estimator=est, estimator_kwargs=est_kw,
                        transforms=_transforms(cfg), eps=eps, steps=int(cfg.steps), alpha=cfg.alpha, norm=cfg.norm,
                        targeted=bool(cfg.targeted), budget=cfg.get("budget"), members=len(surrogates))
    _check_run_values(cfg)
    return CellSettings(
        data=data, surrogate=surrogates, optimizer=opt, optimizer_kwargs=spec.optimizer_kwargs,
        estimator=est, estimator_kwargs=spec.estimator_kwargs, transforms=spec.transforms, eps=spec.eps,
        steps=spec.steps, alpha=spec.alpha, norm=cfg.norm, targeted=bool(cfg.targeted), target_rule=cfg.target_rule,
        seed=int(cfg.seed), n_images=n_images_setting(cfg.n_images), rules=spec.rules, budget=spec.budget,
        snapshots=check_snapshots(as_container(cfg.get("snapshots")) or [], spec.steps), spec=spec,
    )


def _transforms(cfg: DictConfig) -> Dict[str, Dict[str, Any]]:
    """The selected transforms' settings, an experiment's ``transform_defaults`` filling the keys a
    selected transform leaves null."""
    transforms = {k: dict(v or {}) for k, v in (as_container(cfg.transforms) or {}).items()}
    for name, defaults in (as_container(cfg.transform_defaults) or {}).items():
        if name in transforms:
            for k, v in dict(defaults or {}).items():
                if transforms[name].get(k) is None:
                    transforms[name][k] = v
    return transforms


def n_images_setting(value: Any) -> Optional[int]:
    """``n_images``: a count, or null / ``all`` for the whole split (the split's size is checked
    when the data is loaded: a count beyond it is refused there)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"n_images={value!r} is out of range; allowed: an integer >= 1, all, or null (the whole split)")
    return int(value)


def _check_run_values(cfg: DictConfig) -> None:
    """The ranges of the top-level values that are not lengths (one message form each)."""
    check_range("target_rule", cfg.target_rule, cfg.target_rule in TARGET_RULES, " | ".join(TARGET_RULES))
    check_range("batch_size", cfg.batch_size, cfg.batch_size >= 1, "batch_size >= 1")
    n_images_setting(cfg.n_images)
    check_range("preprocess", cfg.get("preprocess", "own"), cfg.get("preprocess", "own") in ("own", "transferattack"),
                "own | transferattack")
    check_range("quantize", cfg.get("quantize", "round"), cfg.get("quantize", "round") in ("round", "truncate"),
                "round | truncate")


def chunk_setting(cfg: DictConfig) -> Any:
    """``chunk``, or the value a config file still sets under 0.2's name ``max_batch`` (``resolve``
    logs the note, once per cell)."""
    old = cfg.get("max_batch")
    return cfg.chunk if old is None else old


def attack_kwargs(s: CellSettings) -> Dict[str, Any]:
    """Keyword arguments of :func:`flatbench.attacks.build_attack`, converted to [0,1] units."""
    return s.spec.loop_kwargs()


# Where a `_target_` in flatbench's own groups may point. flatbench never instantiates config
# nodes itself; the check keeps a shared config from smuggling in a callable for tools that do.
TARGET_PREFIXES = ("flatbench.", "timm.", "torchvision.", "torch.nn.")
CHECKED_GROUPS = ("data", "targets", "optimizer", "estimator", "transforms", "transform_defaults", "logger", "paths",
                  "flatness")


def check_hydra_targets(cfg: Any) -> None:
    """Refuse `_target_` values outside flatbench and the model libraries, naming the key."""

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "_target_" and not (isinstance(v, str) and v.startswith(TARGET_PREFIXES)):
                    raise ConfigError(f"{where}._target_={v!r} is not allowed: `_target_` in flatbench's groups may only "
                                      f"name {', '.join(p + '*' for p in TARGET_PREFIXES)}")
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    for group in CHECKED_GROUPS:
        node = cfg.get(group) if hasattr(cfg, "get") else None
        walk(as_container(node), group)
