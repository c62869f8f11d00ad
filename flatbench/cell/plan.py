"""Stage 1, the plan: settings, cell id, and what already exists for this cell.

The one reuse rule lives here: a stored adversarial set, a cell directory's files and cached
evaluations are used only when their cell id is this cell's (``claim_dir``, ``AdvStore``), and
:func:`plan_cell` decides once where the images and each target's evaluation come from.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd
import torch
from omegaconf import DictConfig

from ..attacks import build_attack
from ..config import (ALL_ROLES, ENTRY_KEYS, CellSettings, attack_kwargs, parse_targets, plain, resolve, to_255)
from ..data import DATASETS, ImageSet
from ..dist import World
from ..io import atomic_write_text, check_writable
from ..registry import ConfigError
from ..store import AdvStore, load_adv

log = logging.getLogger("flatbench")


DATA_META_KEYS = ("name", "default_eps")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available; use device=cpu or device=auto")
    return dev


def _device(name: str, w: World) -> torch.device:
    dev = pick_device(name)
    if w.active and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", w.local_rank)
    return dev


def load_data(s: CellSettings) -> ImageSet:
    kw = {k: v for k, v in s.data.items() if k not in DATA_META_KEYS}
    return DATASETS.build(s.data["name"], **kw).subset(s.n_images)


def config_files(*groups: str) -> str:
    """' (config files: estimator/pgn.yaml, ...)' for the groups Hydra selected, to point at the file."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
    except (ValueError, ImportError):
        return ""
    files = []
    for g in groups:
        c = choices.get(g)
        if c not in (None, "null", "None"):
            files += [f"conf/{g}/{x.strip()}.yaml" for x in str(c).strip("[]").split(",") if x.strip()]
    return f" (config files: {', '.join(files)})" if files else ""


# Data settings that say where or how fast data is read, not what is read (the digest covers that).
NON_SEMANTIC_DATA = ("default_eps", "root", "num_workers", "skip_bad_images", "classes")


def part_settings(part) -> Dict[str, Any]:
    """A part's declared parameters as configs and columns write them (lengths in 1/255 units)."""
    decl = part.declaration
    return {k: (to_255(v) if decl.param(k).length else v) for k, v in part.params().items()}


def hashed_settings(s: CellSettings, attack, data: ImageSet, batch_size: int = 64, pretrained: bool = True,
                    device: Any = "cpu", preprocess: str = "own", quantize_mode: str = "round") -> Dict[str, Any]:
    """The effective settings, after each part applied its own defaults (hashed into cell_id).

    Each part enters by its registry name and its declared parameters (never a class name).

    Paths, the logger, the launcher and the target zoo are not part of it; the data set
    enters by name, settings and content digest; ``batch_size`` does, because a batch's noise
    is keyed by its first image's index; the device *type* does, because CPU and CUDA
    generators draw different noise from the same key (and kernels round differently), so a
    set crafted on one is not the other's. The device index does not enter.
    """
    return {
        "data": {k: v for k, v in s.data.items() if k not in NON_SEMANTIC_DATA},
        "data_digest": data.digest(),
        "n_images": len(data),
        "surrogate": s.surrogate,
        "pretrained": bool(pretrained),
        "optimizer": [attack.optimizer.name, part_settings(attack.optimizer)],
        "estimator": [attack.estimator.name, part_settings(attack.estimator)],
        "transforms": [[p.name, part_settings(p)] for p in (*attack.transforms, *attack.filters)],
        "eps": s.eps, "steps": s.steps, "alpha": round(s.alpha, 6), "norm": s.norm,
        "targeted": s.targeted, "target_rule": s.target_rule if s.targeted else None, "seed": s.seed,
        "batch_size": int(batch_size),
        "amp": attack.amp,
        "device": torch.device(device).type,
        "preprocess": preprocess,
        "quantize": quantize_mode,
    }


def cell_hash(semantic: Dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(semantic, sort_keys=True, default=str).encode()).hexdigest()[:12]


def target_key(key: str, entry: Dict[str, Any], pretrained: bool, preprocess: str = "own") -> str:
    """File-safe key of one target's evaluation: the zoo key and a hash of its model spec."""
    spec = {k: entry.get(k) for k in ENTRY_KEYS}
    spec["pretrained"] = entry.get("pretrained", pretrained)
    if preprocess != "own":  # keys of the default pipeline stay as they were
        spec["preprocess"] = preprocess
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + "-" + digest


def finished_rows(out_dir: Path, cell_id: str, keys: Dict[str, str], flatness: Any = None) -> Optional[pd.DataFrame]:
    """The rows of a cell already finished in out_dir with the same id, targets and flatness settings, else None."""
    meta_f, res_f = out_dir / "cell.json", out_dir / "results.csv"
    if not (meta_f.exists() and res_f.exists()):
        return None
    try:
        meta = json.loads(meta_f.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("cell_id") != cell_id or meta.get("targets") != keys or meta.get("flatness") != flatness:
        return None
    return pd.read_csv(res_f)


# What a cell writes into its directory (cell.json first to go, last to come: it marks the cell finished).
CELL_FILES = ("cell.json", "results.csv", "predictions.csv", "adv.safetensors", "flatness.csv", "landscape.csv",
              "landscape.png", "skipped.csv", "error.json")


def dir_cell(out_dir: Path) -> Optional[Dict[str, Any]]:
    """Who owns out_dir's cell files: ``{"cell_id": ..., "semantic": ...}``, or None when it holds none.

    The owner is the id in cell.json; without one (a cell killed while writing its outputs),
    the id stored in its adv.safetensors; ``cell_id`` is None when files exist but name no cell.
    """
    from ..store import adv_cell_id

    present = [f for f in CELL_FILES if (out_dir / f).exists() and f != "error.json"]
    if not present:
        return None
    try:
        meta = json.loads((out_dir / "cell.json").read_text())
        return {"cell_id": meta.get("cell_id"), "semantic": meta.get("semantic") or {}}
    except (OSError, ValueError):
        pass
    try:
        return {"cell_id": adv_cell_id(out_dir / "adv.safetensors"), "semantic": {}}
    except Exception:  # noqa: BLE001 - a missing or unreadable set names no cell
        return {"cell_id": None, "semantic": {}}


def setting_changes(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    """'eps 32 -> 16, seed 0 -> 5': the semantic settings in which two cells differ."""
    keys = [k for k in dict.fromkeys([*old, *new]) if json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(new.get(k), sort_keys=True, default=str)]
    shown = [f"{k} {old.get(k)} -> {new.get(k)}" if not isinstance(new.get(k), (dict, list)) else k for k in keys]
    return ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else "")


def claim_dir(out_dir: Path, cell_id: str, semantic: Dict[str, Any], mode: str) -> None:
    """The one reuse rule for a cell directory: its files are used only when they are this cell's.

    A directory holding another cell's results is recomputed into by a run: the old cell's
    files are removed first (cell.json first, so that a killed run never leaves them marked
    finished) and the log names the old cell and where its adversarial set stays cached.
    ``flatbench evaluate`` only adds targets to the cell a directory holds, so there the
    mismatch is refused with one line and nothing is touched.
    """
    owner = dir_cell(out_dir)
    if owner is None or owner["cell_id"] == cell_id:
        return
    old = owner["cell_id"] or "of unknown id"
    diff = setting_changes(owner["semantic"], semantic) if owner["semantic"] else ""
    if "penalty" in owner["semantic"]:  # 0.1's name for the estimator: every 0.1 cell id differs from 0.2's
        diff = "it was made by flatbench 0.1, which called the estimator `penalty`"
    if mode == "evaluate":
        raise ConfigError(f"{out_dir} holds cell {old}, but these settings describe cell {cell_id}"
                          f"{' (' + diff + ')' if diff else ''}; `flatbench evaluate` adds targets to the cell a "
                          "directory holds and never changes its settings: run `flatbench` with the new settings "
                          "into another directory")
    log.warning("%s holds the results of cell %s, not of this cell %s%s: replacing them (the old cell's adversarial "
                "set and evaluations stay in the cache under adv/%s; rerun its settings to get its rows back)",
                out_dir, old, cell_id, f" ({diff})" if diff else "", old)
    for f in CELL_FILES:
        (out_dir / f).unlink(missing_ok=True)


def seed_eval_cache(out_dir: Path, cell_id: str, keys: Dict[str, str], store: AdvStore) -> None:
    """Copy an earlier run's per-image predictions of this cell into the evaluation cache.

    So `flatbench evaluate` on an old sweep, or a rerun whose cache directory was cleaned,
    evaluates only the (cell, target) pairs that are really missing.
    """
    meta_f, pred_f = out_dir / "cell.json", out_dir / "predictions.csv"
    if not (meta_f.exists() and pred_f.exists()):
        return
    try:
        meta = json.loads(meta_f.read_text())
    except (OSError, ValueError):
        return
    if meta.get("cell_id") != cell_id:
        return
    old = meta.get("targets") or {}
    want = [k for k, v in keys.items() if old.get(k) == v and not store.eval_path(v).exists()]
    if not want:
        return
    pred = pd.read_csv(pred_f)
    for k in want:
        rows = pred[pred["target"] == k][["image_id", "clean_pred", "adv_pred"]]
        if len(rows):
            atomic_write_text(store.eval_path(keys[k]), rows.to_csv(index=False))


def crafted_on(out_dir: Path, device: torch.device, mode: str) -> str:
    """The device type that enters cell_id: where this run crafts, or for `flatbench evaluate`
    (which never crafts) where the directory's cell was crafted."""
    if mode == "evaluate":
        owner = dir_cell(out_dir)
        if owner and owner["semantic"].get("device"):
            return owner["semantic"]["device"]
    return device.type


def check_objective(objective: str, zoo: Dict[str, Dict[str, Any]]) -> None:
    """At startup: the objective names a role, ``all`` or one of this cell's targets."""
    if objective in ("all", *ALL_ROLES) or objective in zoo:
        return
    raise ConfigError(f"objective={objective!r} is neither a role nor a target of this cell; allowed: all, "
                      f"{', '.join(ALL_ROLES)}, or a target key ({', '.join(zoo)})")


@dataclass
class Cell:
    """The state that passes between a cell's stages: what the plan found (settings, id, the
    stored set to reuse, the targets left to evaluate), then what each later stage adds."""

    settings: CellSettings
    attack: Any                     # the assembled Attack (its model is set by the crafting stage)
    data: ImageSet
    semantic: Dict[str, Any]        # the effective settings hashed into cell_id
    cell_id: str
    zoo: Dict[str, Dict[str, Any]]  # target key -> entry
    keys: Dict[str, str]            # target key -> its evaluation-cache key
    flatness: Optional[Dict[str, Any]]
    device: torch.device
    store: AdvStore
    force: bool
    done: Optional[pd.DataFrame] = None                  # rows of this cell already finished in out_dir
    stored: Optional[Tuple[torch.Tensor, List[str]]] = None  # the adversarial set to reuse; None: craft it
    todo: List[str] = field(default_factory=list)       # targets without a cached evaluation
    # Filled by the later stages:
    y_attack: Optional[torch.Tensor] = None   # target classes of a targeted cell, else None
    adv: Optional[torch.Tensor] = None        # the uint8 adversarial set
    craft_meta: Dict[str, Any] = field(default_factory=dict)
    predictions: Dict[str, pd.DataFrame] = field(default_factory=dict)  # target key -> clean/adv predictions
    evaluated: List[str] = field(default_factory=list)  # targets evaluated now (the rest came from the cache)
    flat_columns: Dict[str, Any] = field(default_factory=dict)

    @property
    def y_craft(self) -> torch.Tensor:
        """The labels the attack moves away from (untargeted) or towards (targeted)."""
        return self.data.labels if self.y_attack is None else self.y_attack


def plan_cell(cfg: DictConfig, out_dir: Path, mode: str, w: World) -> Cell:
    """Validate the settings, build the attack and the data, derive the cell id, and decide from
    it what is reused: the finished rows in ``out_dir``, the stored set (the cache, else the set
    kept in the cell directory), and each target's cached evaluation. Nothing is read that
    belongs to another cell; ``force=true`` reuses nothing."""
    s = resolve(cfg)
    if w.main:
        check_writable(out_dir)
        check_writable(Path(cfg.paths.cache_dir))
    zoo = parse_targets(cfg.targets)
    check_objective(str(cfg.get("objective", "black-box")), zoo)
    device = _device(cfg.device, w)
    force = bool(cfg.get("force", False))
    torch.manual_seed(s.seed)
    try:
        attack = build_attack(None, max_batch=cfg.max_batch, memory_budget_mb=cfg.get("memory_budget_mb"),
                              amp=cfg.get("amp"), channels_last=cfg.get("channels_last", "auto"),
                              tuning_file=cfg.paths.get("tuning_file"), **attack_kwargs(s))
    except ConfigError as exc:
        raise ConfigError(f"{exc}{config_files('optimizer', 'estimator', 'transforms', 'method', 'experiment')}") from None
    data = load_data(s)
    semantic = hashed_settings(s, attack, data, cfg.batch_size, cfg.pretrained, crafted_on(out_dir, device, mode),
                        cfg.preprocess, cfg.quantize)
    cell_id = cell_hash(semantic)
    keys = {k: target_key(k, e, cfg.pretrained, cfg.preprocess) for k, e in zoo.items()}
    flat_node = plain(cfg.get("flatness")) or {}
    flat_node = flat_node if flat_node.get("enabled") else None
    cell = Cell(s, attack, data, semantic, cell_id, zoo, keys, flat_node, device,
                AdvStore(Path(cfg.paths.cache_dir), cell_id), force)
    if w.main:
        claim_dir(out_dir, cell_id, semantic, mode)
    w.barrier()
    cell.done = None if force else finished_rows(out_dir, cell_id, keys, flat_node)
    if cell.done is not None:
        return cell
    if force and mode == "run" and w.main:
        cell.store.clear()
    w.barrier()
    stored = cell.store.load()
    if stored is None and (out_dir / "adv.safetensors").exists() and not force:
        # The set kept in the cell dir (a sweep whose cache was cleaned): claim_dir made sure it is this cell's.
        stored = load_adv(out_dir / "adv.safetensors")
    if stored is not None and list(stored[1]) != list(data.ids):
        raise ConfigError(f"the stored adversarial set of cell {cell_id} holds other images than the data set")
    if stored is None and mode == "evaluate":
        raise ConfigError(f"cell {cell_id} ({out_dir}) has no stored adversarial set; `flatbench evaluate` never "
                          "crafts: run the sweep itself (it resumes from finished batches)")
    cell.stored = stored
    if w.main and not force:
        seed_eval_cache(out_dir, cell_id, keys, cell.store)
    w.barrier()
    cell.todo = [k for k in zoo if force or not cell.store.eval_path(keys[k]).exists()]
    return cell
