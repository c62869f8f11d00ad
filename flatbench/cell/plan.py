"""Stage 1, the plan: settings, cell id, and what already exists for this cell.

The one reuse rule lives here: a stored adversarial set, a cell directory's files and cached
evaluations are used only when their cell id is this cell's (``CellDir.claim``, ``AdvStore``), and
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

from flatbench.cell.settings import CellSettings
from flatbench.core.units import to_255
from flatbench.cell.settings import ENTRY_KEYS
from flatbench.data import DATASETS, ImageSet
from flatbench.cell.dist import World
from flatbench.core.io import check_writable
from flatbench.core.registry import ConfigError
from flatbench.cell.settings import Settings
from flatbench.cell.store import AdvStore, load_adv, read_whole
from flatbench.cell.directory import CellDir

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
        seen = torch.cuda.device_count()
        if seen == 1:   # SLURM bound one GPU to this task (--gpus-per-task, --gpu-bind): it is cuda:0
            return torch.device("cuda", 0)
        if w.local_rank >= seen:
            raise ConfigError(f"device={name}: task {w.rank} (local rank {w.local_rank}) sees only {seen} GPUs; give each "
                              "task its own GPU (hydra.launcher.gpus_per_node = hydra.launcher.tasks_per_node)")
        dev = torch.device("cuda", w.local_rank)
    return dev


def load_data(s: CellSettings) -> ImageSet:
    kw = {k: v for k, v in s.data.items() if k not in DATA_META_KEYS}
    data = DATASETS.build(s.data["name"], **kw)
    if s.n_images is not None and s.n_images > len(data):
        raise ConfigError(f"n_images={s.n_images} is more than the {len(data)} images of {data.name}'s split; "
                          f"allowed: 1..{len(data)}, or n_images=all")
    return data.subset(s.n_images)


def config_files(choices: Dict[str, str], *groups: str) -> str:
    """' (config files: estimator/pgn.yaml, ...)' for the groups Hydra selected (``choices``, as
    :class:`~flatbench.cell.settings.Settings` carries them), to point at the file."""
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
    set crafted on one is not the other's. The device index does not enter. A surrogate whose pinned
    weights were republished under its name enters with its revision (``weights_revision``).
    """
    from flatbench.models.sources import weights_revision

    revised = {n: r for n in s.surrogate for r in [weights_revision(n)] if r > 1}
    return {**({"weights_revision": revised} if revised else {}),
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
    return hashlib.sha1(json.dumps(id_settings(semantic), sort_keys=True, default=str).encode()).hexdigest()[:12]


def id_settings(semantic: Dict[str, Any]) -> Dict[str, Any]:
    """The settings as the id hashes them: a part's parameter declared after cells were stored
    (``Param.added_at``) is left out at the value those cells had, so they keep their ids."""
    from flatbench.attacks import ESTIMATORS, OPTIMIZERS, TRANSFORMS
    from flatbench.attacks.parts import NOTHING

    def strip(parts, name, settings):
        if name not in parts:
            return settings
        decl = parts.get(name)
        added = {p.name: p.added_at for p in decl.params if p.added_at is not NOTHING}
        return {k: v for k, v in settings.items() if not (k in added and v == added[k])}

    out = dict(semantic)
    for key, parts in (("optimizer", OPTIMIZERS), ("estimator", ESTIMATORS)):
        if isinstance(out.get(key), (list, tuple)) and len(out[key]) == 2:
            out[key] = [out[key][0], strip(parts, *out[key])]
    if isinstance(out.get("transforms"), list):
        out["transforms"] = [[n, strip(TRANSFORMS, n, s)] for n, s in out["transforms"]]
    return out


def target_key(key: str, entry: Dict[str, Any], pretrained: bool, preprocess: str = "own") -> str:
    """File-safe key of one target's evaluation: the zoo key and a hash of its model spec."""
    from flatbench.models.sources import weights_revision

    spec = {k: entry.get(k) for k in ENTRY_KEYS}
    spec["pretrained"] = entry.get("pretrained", pretrained)
    if preprocess != "own":  # keys of the default pipeline stay as they were
        spec["preprocess"] = preprocess
    revision = weights_revision(entry["model"]) if entry.get("model") else 1
    if revision > 1:   # republished weights: never the old evaluations
        spec["weights_revision"] = revision
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + "-" + digest


def cell_semantic(st: Settings, attack, data: ImageSet, device_type: str) -> Dict[str, Any]:
    """The settings hashed into the id of the cell ``st`` describes (:func:`hashed_settings`)."""
    run = st.run
    return hashed_settings(st.cell, attack, data, run.batch_size, run.pretrained, device_type, run.preprocess, run.quantize)


def target_keys(st: Settings) -> Dict[str, str]:
    """Each target's evaluation-cache key (:func:`target_key`)."""
    return {k: target_key(k, e, st.run.pretrained, st.run.preprocess) for k, e in st.targets.items()}


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
    snapshots: Dict[int, AdvStore] = field(default_factory=dict)   # step -> the store of its examples
    snap_todo: List[int] = field(default_factory=list)  # snapshot steps without a stored set (crafted again)
    # Filled by the later stages:
    y_attack: Optional[torch.Tensor] = None   # target classes of a targeted cell, else None
    adv: Optional[torch.Tensor] = None        # the uint8 adversarial set
    craft_meta: Dict[str, Any] = field(default_factory=dict)
    predictions: Dict[str, pd.DataFrame] = field(default_factory=dict)  # target key -> clean/adv predictions
    evaluated: List[str] = field(default_factory=list)  # targets evaluated now (the rest came from the cache)
    flat_columns: Dict[str, Any] = field(default_factory=dict)
    snaps: Dict[int, torch.Tensor] = field(default_factory=dict)          # step -> its uint8 examples
    snap_predictions: Dict[int, Dict[str, pd.DataFrame]] = field(default_factory=dict)  # step -> target -> predictions
    directory: Optional[CellDir] = None       # the cell directory, built once by the plan: every stage writes through it

    @property
    def y_craft(self) -> torch.Tensor:
        """The labels the attack moves away from (untargeted) or towards (targeted)."""
        return self.data.labels if self.y_attack is None else self.y_attack


def plan_cell(st: Settings, out_dir: Path, mode: str, w: World) -> Cell:
    """Validate the settings, build the attack and the data, derive the cell id, and decide from
    it what is reused: the finished rows in ``out_dir``, the stored set (the cache, else the set
    kept in the cell directory), and each target's cached evaluation. Nothing is read that
    belongs to another cell; ``force=true`` reuses nothing."""
    s, run, zoo = st.cell, st.run, st.targets
    if w.main:
        check_writable(out_dir)
        check_writable(st.paths.cache_dir)
    device = _device(run.device, w)
    force = run.force
    torch.manual_seed(s.seed)
    try:
        attack = st.build_attack()
    except ConfigError as exc:
        raise ConfigError(f"{exc}{config_files(st.choices, 'optimizer', 'estimator', 'transforms', 'method', 'experiment')}") from None
    data = load_data(s)
    cell_dir = CellDir(out_dir)
    # The device type enters cell_id: where this run crafts, or for `flatbench evaluate` (which
    # never crafts) where the directory's cell was crafted.
    crafted_on = (cell_dir.crafted_on() if mode == "evaluate" else None) or device.type
    semantic = cell_semantic(st, attack, data, crafted_on)
    cell_id = cell_hash(semantic)
    keys = target_keys(st)
    flat_node = st.flatness_node
    cell = Cell(s, attack, data, semantic, cell_id, zoo, keys, flat_node, device,
                AdvStore(st.paths.cache_dir, cell_id), force, directory=cell_dir)
    if w.main:
        cell_dir.claim(cell_id, semantic, mode)
    w.barrier()
    cell.done = None if force else cell_dir.finished_rows(cell_id, keys, flat_node, s.snapshots)
    if cell.done is not None:
        return cell
    if force and mode == "run" and w.main:
        cell.store.clear()
    w.barrier()
    stored = cell.store.load()
    if stored is None and cell_dir.adv.exists() and not force:
        # The set kept in the cell dir (a sweep whose cache was cleaned): claim made sure it is this cell's.
        stored = read_whole(cell_dir.adv, load_adv)
    if stored is not None and list(stored[1]) != list(data.ids):
        raise ConfigError(f"the stored adversarial set of cell {cell_id} holds other images than the data set")
    if stored is None and mode == "evaluate":
        raise ConfigError(f"cell {cell_id} ({out_dir}) has no stored adversarial set; `flatbench evaluate` never "
                          "crafts: run the sweep itself (it resumes from finished batches)")
    cell.stored = stored
    # Snapshots are more points of the same run (not in cell_id): a step whose set is stored is reused,
    # and a stored cell that lacks a step asked for is crafted again as far as that step.
    cell.snapshots = {t: cell.store.snapshot(t) for t in s.snapshots}
    cell.snap_todo = [t for t, st in cell.snapshots.items() if force or not st.full.exists()]
    if cell.snap_todo and mode == "evaluate":
        raise ConfigError(f"cell {cell_id} has no stored examples of step(s) {cell.snap_todo}; `flatbench evaluate` "
                          "never crafts: run the sweep with these snapshots")
    if w.main and not force:
        cell_dir.seed_eval_cache(cell_id, keys, cell.store)
    w.barrier()
    cell.todo = [k for k in zoo if force or not cell.store.has_eval(keys[k], data.ids)]
    return cell
