"""One cell: load data, build surrogate and target zoo, craft, store, evaluate, record."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__
from .attacks import build_attack, part_params
from .attacks.loop import NonFiniteError
from .config import (ALL_ROLES, ENTRY_KEYS, ROLES, CellSettings, attack_kwargs, flatness_settings, parse_targets, plain, resolve,
                     to_255)
from .data import DATASETS, ImageSet
from .io import atomic_write_text, check_writable
from .dist import World, world
from .metrics import perturbation_norms, success_flags, transfer_counts
from .models import defend, freeze, load_model, load_surrogate
from .record import build_logger, write_csv
from .registry import ConfigError
from .quantize import quantize
from .store import AdvStore, load_adv, save_adv

log = logging.getLogger("flatbench")

DATA_META_KEYS = ("name", "default_eps")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available; use device=cpu or device=auto")
    return dev


def load_data(s: CellSettings) -> ImageSet:
    kw = {k: v for k, v in s.data.items() if k not in DATA_META_KEYS}
    return DATASETS.build(s.data["name"], **kw).subset(s.n_images)


def choose_targets(s: CellSettings, data: ImageSet, surrogate: torch.nn.Module, device, batch_size: int) -> Optional[torch.Tensor]:
    """Target classes for a targeted cell, by ``target_rule``; None when untargeted."""
    if not s.targeted:
        return None
    if s.target_rule == "dataset":
        if data.targets is None:
            raise ConfigError(f"targeted=true with target_rule=dataset, but data set {data.name!r} has no target column; "
                              "use target_rule=random or target_rule=least_likely")
        return data.targets.clone()
    if s.target_rule == "random":
        gen = torch.Generator().manual_seed(s.seed)
        shift = torch.randint(1, data.num_classes, (len(data),), generator=gen)
        return (data.labels + shift) % data.num_classes
    with torch.inference_mode():
        logits = torch.cat([surrogate(data.floats(slice(i, i + batch_size)).to(device)).cpu()
                            for i in range(0, len(data), batch_size)])
    return logits.argmin(1)


# Data settings that say where or how fast data is read, not what is read (the digest covers that).
NON_SEMANTIC_DATA = ("default_eps", "root", "num_workers", "skip_bad_images", "classes")


def describe(s: CellSettings, attack, data: ImageSet, batch_size: int = 64, pretrained: bool = True,
             device: Any = "cpu", preprocess: str = "own", quantize_mode: str = "round") -> Dict[str, Any]:
    """The effective settings, after each part applied its own defaults (hashed into cell_id).

    Paths, the logger, the launcher and the target zoo are not part of it; the data set
    enters by name, settings and content digest; ``batch_size`` does, because a batch's noise
    is keyed by its first image's index; the device *type* does, because CPU and CUDA
    generators draw different noise from the same key (and kernels round differently), so a
    set crafted on one is not the other's. The device index does not enter.
    """
    est = part_params(attack.estimator)
    if "r" in est:
        est["r"] = to_255(attack.alpha if est["r"] is None else est["r"])
    return {
        "data": {k: v for k, v in s.data.items() if k not in NON_SEMANTIC_DATA},
        "data_digest": data.digest(),
        "n_images": len(data),
        "surrogate": s.surrogate,
        "pretrained": bool(pretrained),
        "optimizer": [s.optimizer, part_params(attack.optimizer)],
        "penalty": [s.penalty, est],
        "transforms": [[type(p).__name__.lower(), part_params(p)] for p in (*attack.transforms, *attack.filters)],
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


def config_columns(s: CellSettings, attack, data: ImageSet, semantic: Dict[str, Any], cell_id: str,
                   experiment: str = "") -> Dict[str, Any]:
    est = semantic["penalty"][1]
    tf_cols, tf_labels = {}, []
    for name, params in semantic["transforms"]:
        tf_labels.append(name + "(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")")
        tf_cols.update({f"{name}.{k}": v for k, v in params.items()})
    cols = {
        "experiment": experiment, "dataset": data.name, "n_images": len(data), "surrogate": "+".join(s.surrogate), "attack": attack.label,
        "optimizer": s.optimizer, "penalty": s.penalty, "beta": est.get("beta"), "r": est.get("r"),
        "zeta": est.get("zeta"), "n_samples": est.get("n_samples"), "lookahead": est.get("lookahead"),
        "normalize": est.get("normalize"), "combine": est.get("combine"),
        "transforms": "+".join(tf_labels) or "none", "eps": s.eps, "steps": s.steps, "alpha": round(s.alpha, 6),
        "decay": getattr(attack.optimizer, "decay", None), "norm": s.norm, "targeted": s.targeted,
        "target_rule": s.target_rule if s.targeted else "", "seed": s.seed, "cell_id": cell_id,
        # Every other setting that enters cell_id is a column too, so a table can tell any two cells apart.
        "batch_size": semantic["batch_size"], "amp": semantic["amp"] or "none", "pretrained": semantic["pretrained"],
        "device": semantic["device"], "data_digest": semantic["data_digest"],
        "preprocess": semantic["preprocess"], "quantize": semantic["quantize"],
    }
    cols.update({f"optimizer.{k}": v for k, v in semantic["optimizer"][1].items() if k != "decay"})
    cols.update({f"penalty.{k}": v for k, v in est.items() if k not in cols})
    cols.update({f"data.{k}": v for k, v in semantic["data"].items() if k != "name"})
    cols.update(tf_cols)
    return cols


@torch.inference_mode()
def predict(model: torch.nn.Module, images_u8: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    return torch.cat([model(images_u8[i:i + batch_size].to(device).float() / 255.0).argmax(1).cpu()
                      for i in range(0, len(images_u8), batch_size)])


class TargetModels:
    """Builds each distinct target model once per cell; the surrogate doubles as its own target."""

    BUILD_KEYS = ("label_offset", "num_classes", "input_size", "pretrained")

    def __init__(self, surrogate, surrogate_names, zoo_kw, device, data: Optional[ImageSet] = None):
        self.data = data
        self.surrogate, self.names, self.kw, self.device = surrogate, list(surrogate_names), dict(zoo_kw), device
        self.cache = {}

    def get(self, entry: Dict[str, Any]) -> torch.nn.Module:
        build = {k: entry[k] for k in self.BUILD_KEYS if entry.get(k) is not None}
        key = (entry["model"], tuple(sorted(build.items())))
        if key not in self.cache:
            if not build and self.surrogate is not None and len(self.names) == 1 and entry["model"] == self.names[0]:
                self.cache[key] = self.surrogate
            else:
                self.cache[key] = load_model(entry["model"], **{**self.kw, **build}).to(self.device)
                if self.data is not None:
                    check_classes(self.cache[key], self.data, self.device, f"target {entry['model']!r}")
        model = self.cache[key]
        if entry.get("defense"):
            model = freeze(defend(model, entry["defense"], name=entry["model"])).to(self.device)
        return model


def config_files(*groups: str) -> str:
    """' (config files: penalty/pgn.yaml, ...)' for the groups Hydra selected, to point at the file."""
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


def precheck_target(entry: Dict[str, Any], data: ImageSet, pretrained: bool) -> bool:
    """Check a target before crafting without building it: its declared class count against the
    data set's labels and, offline, that its weights are cached. False when its config does not
    say enough (the caller builds it and checks on one image instead)."""
    from .models import TESTBED
    from .models.hub import check_available, declared_classes
    from .models.testbed import NUM_CLASSES

    name = entry["model"]
    if name in TESTBED:
        k = NUM_CLASSES
    else:
        check_available(name, entry.get("pretrained", pretrained))
        try:
            k = declared_classes(name, entry.get("label_offset"), entry.get("num_classes"))
        except ConfigError:
            return False
    require_classes(k, data, f"target {name!r}")
    return True


def check_classes(model: torch.nn.Module, data: ImageSet, device, what: str) -> None:
    """Fail before crafting when a model's class space does not match the data set's labels."""
    with torch.inference_mode():
        k = model(data.floats(slice(0, 1)).to(device)).shape[-1]
    require_classes(k, data, what)


def require_classes(k: int, data: ImageSet, what: str) -> None:
    if k != data.num_classes:
        raise ConfigError(f"{what} outputs {k} classes but data set {data.name!r} has {data.num_classes} "
                          f"(labels 0..{data.num_classes - 1}); set label_offset for 1001-class models, or pick a "
                          "model trained on this data set")


class OutOfMemory(ConfigError):
    """The device ran out of memory; the message says which settings lower the need."""


class Stop(Exception):
    """Raised between batches when SIGTERM/SIGINT asked the cell to stop (finished batches are kept)."""


STOP_REQUESTED = {"signal": None}


def craft(attack, data: ImageSet, y_attack: torch.Tensor, device, batch_size: int, seed: int, progress: bool,
          store: Optional[AdvStore] = None, world: Optional[World] = None, force: bool = False,
          quantize_mode: str = "round") -> tuple:
    """Adversarial uint8 images for the batches this rank owns, batch by batch, with a progress bar.

    Each finished batch is checkpointed in ``store`` (when given), so an interrupted cell
    resumes from its last finished batch. Returns (images, seconds, batches crafted now).
    """
    from tqdm.auto import tqdm

    world = world or World()
    out = torch.zeros_like(data.images)
    t0 = time.perf_counter()
    bounds = [(lo, min(len(data), lo + batch_size)) for lo in range(0, len(data), batch_size)]
    mine = [(i, lo, hi) for i, (lo, hi) in enumerate(bounds) if world.mine(i)]
    bar = tqdm(total=sum(hi - lo for _, lo, hi in mine), desc=f"craft {attack.label}", unit="img",
               disable=not progress or not world.main)
    crafted = 0
    if store is not None and not force and not store.full.exists():
        have = sum(store.batch_path(lo, hi).exists() for _, lo, hi in mine)
        if have:
            log.info("resuming: %d of %d batches already finished (checkpoints in %s)", have, len(mine), store.batches)
    # One chunk size and memory format for the whole set: a resumed cell keeps the ones its first
    # batches were crafted with (chunking and memory format change the floating-point summation
    # order), and under torchrun every rank takes rank 0's instead of measuring its own.
    settings = store.crafting_settings() if store is not None and not force else None
    if settings is None and world.active:
        if world.main:
            x0 = data.floats(slice(0, min(len(data), batch_size))).to(device)
            settings = {"chunk": attack.resolved_max_batch(x0), "memory_format": attack.memory_format}
        settings = world.broadcast(settings)
    if settings is not None:
        attack.pin(settings["chunk"], settings["memory_format"])
        log.info("crafting with chunk %s, %s (%s)", settings["chunk"], settings["memory_format"],
                 "as the finished batches were" if store is not None and store.settings_path.exists() else "rank 0's choice")
    settings_kept = store is None or (not force and store.settings_path.exists())
    for _, lo, hi in mine:
        done = None if (store is None or force) else store.load_batch(lo, hi)
        if done is None:
            if STOP_REQUESTED["signal"]:
                raise Stop(f"stopped by {STOP_REQUESTED['signal']} before batch {lo}:{hi}")
            x = data.floats(slice(lo, hi)).to(device)
            # Keyed by the batch's first image index, so a batch's noise does not depend on the
            # rank or on what ran before it.
            # A batch of one has no other image to mix with: mixing transforms draw from the data set.
            partners = None
            if hi - lo == 1 and len(data) > 1 and any(hasattr(t, "with_partners") for t in attack.transforms):
                partners = data.floats([(lo + 1 + j) % len(data) for j in range(min(16, len(data) - 1))]).to(device)
            try:
                x_adv = attack(x, y_attack[lo:hi].to(device), seed=(seed, lo), partners=partners)
            except NonFiniteError as exc:
                raise NonFiniteError(f"{exc} in batch of images {lo}..{hi - 1} ({data.ids[lo]}..{data.ids[hi - 1]})") from None
            except torch.OutOfMemoryError:
                raise OutOfMemory(f"out of memory on {device} crafting images {lo}..{hi - 1} (max_batch resolved to "
                                  f"{attack.max_batch}); lower max_batch or batch_size, set memory_budget_mb, or use "
                                  "amp=bf16; finished batches are kept") from None
            done = quantize(x_adv, data.images[lo:hi], attack.eps, attack.norm, quantize_mode).cpu()
            if store is not None:
                if not settings_kept and world.main:
                    store.save_crafting_settings(attack.cap, attack.memory_format)
                    settings_kept = True
                store.save_batch(lo, hi, done)
            crafted += 1
        out[lo:hi] = done
        bar.update(hi - lo)
    bar.close()
    return out, time.perf_counter() - t0, crafted


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
    from .store import adv_cell_id

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


def _device(name: str, w: World) -> torch.device:
    dev = pick_device(name)
    if w.active and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", w.local_rank)
    return dev


def target_role(entry: Dict[str, Any], surrogate: List[str]) -> str:
    return "white-box" if entry["model"] in surrogate and not entry.get("defense") else ROLES[entry["role"]]


def check_objective(objective: str, zoo: Dict[str, Dict[str, Any]]) -> None:
    """At startup: the objective names a role, ``all`` or one of this cell's targets."""
    if objective in ("all", *ALL_ROLES) or objective in zoo:
        return
    raise ConfigError(f"objective={objective!r} is neither a role nor a target of this cell; allowed: all, "
                      f"{', '.join(ALL_ROLES)}, or a target key ({', '.join(zoo)})")


def cell_objective(df: pd.DataFrame, objective: str) -> float:
    """What the cell returns to a sweeper: the mean ASR (%) over the objective's targets; NaN
    when the cell has no target of that role (Optuna records such a trial as failed)."""
    rows = df if objective == "all" else df[df["target"] == objective] if objective in set(df["target"]) \
        else df[df["role"] == objective]
    if rows.empty:
        log.warning("objective %s: this cell has no target of that role (roles: %s); returning NaN", objective,
                    ", ".join(dict.fromkeys(df["role"])))
        return float("nan")
    return float(rows["asr"].mean())


def run_cell(cfg: DictConfig, out_dir: Path, mode: str = "run",
             sweep: Optional[Dict[str, Any]] = None) -> Optional[pd.DataFrame]:
    """Run the cell described by ``cfg`` into ``out_dir``; returns its rows (None on ranks > 0).

    ``mode="run"`` crafts what is missing (resuming from finished batches) and evaluates the
    (cell, target) pairs without a cached evaluation; ``mode="evaluate"`` never crafts and
    fails when the cell has no stored adversarial set. A cell already finished in ``out_dir``
    with the same id and targets is skipped; ``force=true`` recomputes everything.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    w = world()
    s = resolve(cfg)
    if w.main:
        check_writable(out_dir)
        check_writable(Path(cfg.paths.cache_dir))
    zoo = parse_targets(cfg.targets)
    check_objective(str(cfg.get("objective", "black-box")), zoo)
    device = _device(cfg.device, w)
    force = bool(cfg.get("force", False))
    torch.manual_seed(s.seed)
    logger = build_logger(plain(cfg.logger)) if w.main else build_logger({"name": "csv"})
    failed = True
    try:
        try:
            attack = build_attack(None, max_batch=cfg.max_batch, memory_budget_mb=cfg.get("memory_budget_mb"),
                                  amp=cfg.get("amp"), channels_last=cfg.get("channels_last", "auto"),
                                  tuning_file=cfg.paths.get("tuning_file"), **attack_kwargs(s))
        except ConfigError as exc:
            raise ConfigError(f"{exc}{config_files('attack', 'penalty', 'transforms', 'method', 'experiment')}") from None
        data = load_data(s)
        semantic = describe(s, attack, data, cfg.batch_size, cfg.pretrained, crafted_on(out_dir, device, mode),
                            cfg.preprocess, cfg.quantize)
        cell_id = cell_hash(semantic)
        keys = {k: target_key(k, e, cfg.pretrained, cfg.preprocess) for k, e in zoo.items()}
        flat_node = plain(cfg.get("flatness")) or {}
        flat_node = flat_node if flat_node.get("enabled") else None
        if w.main:
            claim_dir(out_dir, cell_id, semantic, mode)
        w.barrier()
        done = finished_rows(out_dir, cell_id, keys, flat_node)
        if done is not None and not force:
            log.info("cell %s already finished in %s: skipping (force=true recomputes)", cell_id, out_dir)
            failed = False
            return done if w.main else None
        store = AdvStore(Path(cfg.paths.cache_dir), cell_id)
        if force and mode == "run" and w.main:
            store.clear()
        w.barrier()
        if w.main:
            logger.start(OmegaConf.to_container(cfg, resolve=True), out_dir,
                         f"{attack.label}-{'+'.join(s.surrogate)}-eps{s.eps:g}", sweep)
        zoo_dir = cfg.paths.get("zoo_dir")
        zoo_kw = dict(zoo_dir=Path(zoo_dir) if zoo_dir else None, progress=cfg.progress, pretrained=cfg.pretrained,
                      preprocess=cfg.preprocess)
        skipped = data.meta.get("skipped") or []
        if skipped and w.main:
            atomic_write_text(out_dir / "skipped.csv", pd.DataFrame(skipped).to_csv(index=False))
            log.warning("%d bad image(s) skipped (skip_bad_images=true); list in %s", len(skipped), out_dir / "skipped.csv")

        stored = store.load()
        if stored is None and (out_dir / "adv.safetensors").exists() and not force:
            # The set kept in the cell dir (a sweep whose cache was cleaned): claim_dir made sure it is this cell's.
            stored = load_adv(out_dir / "adv.safetensors")
        if stored is not None and list(stored[1]) != list(data.ids):
            raise ConfigError(f"the stored adversarial set of cell {cell_id} holds other images than the data set")
        if stored is None and mode == "evaluate":
            raise ConfigError(f"cell {cell_id} ({out_dir}) has no stored adversarial set; `flatbench evaluate` never "
                              "crafts: run the sweep itself (it resumes from finished batches)")
        surrogate_box: Dict[str, torch.nn.Module] = {}

        def surrogate() -> torch.nn.Module:
            if "m" not in surrogate_box:
                surrogate_box["m"] = load_surrogate(s.surrogate, **zoo_kw).to(device)
                check_classes(surrogate_box["m"], data, device, f"surrogate {'+'.join(s.surrogate)!r}")
            return surrogate_box["m"]

        if stored is None:
            attack.model = torch.compile(surrogate()) if cfg.get("compile") else surrogate()
        if w.main and not force:
            seed_eval_cache(out_dir, cell_id, keys, store)
        w.barrier()
        # Every target still to evaluate is checked before crafting (its class space and, offline,
        # its weights), from its config when that says enough; it is built only after crafting,
        # so startup (paid again on every SLURM requeue) stays short.
        todo = [k for k in zoo if force or not store.eval_path(keys[k]).exists()]
        models = TargetModels(surrogate_box.get("m"), s.surrogate, zoo_kw, device, data)
        unchecked = [k for k in todo if not precheck_target(zoo[k], data, cfg.pretrained)]
        target_models = {k: models.get(zoo[k]) for k in unchecked}  # no config-level answer: build and check now
        log.info("cell %s: startup %.1f s (%d of %d targets built at startup)", cell_id,
                 time.perf_counter() - t_start, len(unchecked), len(todo))
        log.info("cell %s: %s on %s, %d images of %s, eps=%g/255, device=%s%s; %d target(s) to evaluate, %d cached",
                 cell_id, attack.label, "+".join(s.surrogate), len(data), data.name, s.eps, device,
                 f", rank {w.rank}/{w.size}" if w.active else "", len(todo), len(zoo) - len(todo))
        y_attack = choose_targets(s, data, surrogate() if s.targeted and s.target_rule == "least_likely" else None,
                                  device, cfg.batch_size)
        y_craft = data.labels if y_attack is None else y_attack
        if stored is None:
            adv, seconds, crafted = craft(attack, data, y_craft, device, cfg.batch_size, s.seed, cfg.progress,
                                          store=store, world=w, force=force, quantize_mode=cfg.quantize)
            grad_evals = int(w.sum(attack.grad_evals))
            seconds = w.max(seconds)
            w.barrier()
            if w.main:
                parts = [store.load_batch(lo, min(len(data), lo + cfg.batch_size)) for lo in range(0, len(data), cfg.batch_size)]
                adv = torch.cat(parts)
                store.save(adv, data.ids, {"cell_id": cell_id, "craft_seconds": seconds, "grad_evals": grad_evals,
                                           "chunk": attack.cap, "memory_format": attack.memory_format,
                                           "semantic": semantic})
            w.barrier()
            adv = store.load()[0] if w.active else adv
            craft_meta = {"craft_seconds": seconds, "grad_evals": grad_evals, "chunk": attack.cap,
                          "memory_format": attack.memory_format}
        else:
            adv = stored[0]
            craft_meta = store.meta() or {"craft_seconds": float("nan"), "grad_evals": -1}
            log.info("cell %s: reusing the stored adversarial set (%d images)", cell_id, len(adv))

        t_build = time.perf_counter()
        models.surrogate = models.surrogate if models.surrogate is not None else surrogate_box.get("m")
        target_models.update({k: models.get(zoo[k]) for k in todo if k not in target_models})
        log.info("cell %s: built %d target(s) in %.1f s", cell_id, len(target_models), time.perf_counter() - t_build)
        evaluated = []
        per_target: Dict[str, pd.DataFrame] = {}
        for key in zoo:
            path = store.eval_path(keys[key])
            if key not in target_models:
                per_target[key] = pd.read_csv(path)
                continue
            per_target[key] = evaluate_target(target_models[key], data, adv, device, cfg.batch_size, w)
            evaluated.append(key)
            if w.main:
                atomic_write_text(path, per_target[key].to_csv(index=False))
        log.info("cell %s: evaluated %d target(s) [%s], reused %d from the cache", cell_id, len(evaluated),
                 ", ".join(evaluated), len(zoo) - len(evaluated))
        if not w.main:
            failed = False
            return None

        seconds = float(craft_meta.get("craft_seconds", float("nan")))
        base = config_columns(s, attack, data, semantic, cell_id, experiment=str(cfg.name))
        flat = flatness_settings(cfg.get("flatness"))
        if flat is not None:
            base.update(measure_flatness(surrogate(), data, adv, y_craft, s, flat, device, cfg.batch_size, out_dir,
                                         cfg.progress, attack.label))
        base.update(perturbation_norms(data.images, adv))
        base.update({"craft_seconds": round(seconds, 3), "images_per_second": round(len(data) / max(seconds, 1e-9), 3),
                     "grad_evals": int(craft_meta.get("grad_evals", -1)), "chunk": craft_meta.get("chunk"),
                     "memory_format": craft_meta.get("memory_format", ""), "version": __version__})
        rows, per_image = [], []
        for key, entry in zoo.items():
            pt = per_target[key]
            clean, pred = (torch.as_tensor(pt[c].to_numpy().copy()) for c in ("clean_pred", "adv_pred"))
            counts = transfer_counts(clean, pred, data.labels, y_attack)
            role = target_role(entry, s.surrogate)
            rows.append({**base, "target": key, "target_model": entry["model"], "role": role, **counts,
                         "n_images": len(data)})
            fooled = success_flags(pred, data.labels, y_attack).numpy()
            per_image.append(pd.DataFrame({"cell_id": cell_id, "target": key, "image_id": data.ids,
                                           "label": data.labels.numpy(), "clean_pred": clean.numpy(),
                                           "adv_pred": pred.numpy(), "attack_target": y_craft.numpy(),
                                           "fooled": fooled.astype(int)}))
        # cell.json goes last: it marks the cell finished, and the report reads only cells that have it.
        if cfg.save_images:
            save_adv(out_dir / "adv.safetensors", adv, data.ids, cell_id)
        atomic_write_text(out_dir / "predictions.csv", pd.concat(per_image).to_csv(index=False))
        df = write_csv(out_dir / "results.csv", rows)
        atomic_write_text(out_dir / "cell.json", json.dumps({
            "cell_id": cell_id, "semantic": semantic, "targets": keys, "evaluated": evaluated,
            "reused": [k for k in zoo if k not in evaluated], "craft_seconds": seconds, "version": __version__,
            "flatness": flat_node,
            "adv_store": str(store.full)}, indent=2, default=str))
        logger.log_rows(df)
        failed = False
        return df
    finally:
        logger.finish(failed=failed)


def measure_flatness(model, data: ImageSet, adv: torch.Tensor, y: torch.Tensor, s: CellSettings, flat, device,
                     batch_size: int, out_dir: Path, progress: bool, label: str) -> Dict[str, float]:
    """Flatness metrics of the surrogate at the stored adversarial images (and clean ones).

    Writes flatness.csv (per image), landscape.csv and landscape.png (the first images) into
    out_dir; returns the aggregated columns for the rows.
    """
    from tqdm.auto import tqdm

    from .flatness import METRICS, aggregate, landscape, landscape_png, metrics, model_loss

    where = [("adv", adv)] + ([("clean", data.images)] if flat.at_clean else [])
    frames, cols = [], {}
    for at, images in where:
        per = {m: [] for m in METRICS}
        for lo in tqdm(range(0, len(data), batch_size), desc=f"flatness ({at})", disable=not progress):
            hi = min(len(data), lo + batch_size)
            x = images[lo:hi].to(device).float() / 255.0
            fn = model_loss(model, y[lo:hi], s.targeted)
            for m, v in metrics(fn, x, data.ids[lo:hi], flat, seed=s.seed).items():
                per[m] += v.tolist()
        frames.append(pd.DataFrame({"image_id": data.ids, "at": at, **per}))
        cols.update(aggregate(per, prefix="flat" if at == "adv" else "flat_clean"))
    atomic_write_text(out_dir / "flatness.csv", pd.concat(frames).to_csv(index=False))
    n = min(flat.landscape_images, len(data))
    if n:
        x = adv[:n].to(device).float() / 255.0
        rows = landscape(model_loss(model, y[:n], s.targeted), x, data.ids[:n], flat, seed=s.seed)
        land = pd.DataFrame(rows)
        atomic_write_text(out_dir / "landscape.csv", land.to_csv(index=False))
        from .io import atomic_write_bytes

        atomic_write_bytes(out_dir / "landscape.png", landscape_png({label: land}, data.ids[:n],
                                                                    title=f"{label}: loss around x_adv"))
    cols["flat_rho"] = to_255(flat.rho)
    return cols


def evaluate_target(model: torch.nn.Module, data: ImageSet, adv: torch.Tensor, device, batch_size: int,
                    w: World) -> pd.DataFrame:
    """Clean and adversarial predictions of one target on every image (ranks share the batches)."""
    idx, clean, pred = [], [], []
    for i, lo in enumerate(range(0, len(data), batch_size)):
        if not w.mine(i):
            continue
        hi = min(len(data), lo + batch_size)
        idx.append(torch.arange(lo, hi))
        clean.append(predict(model, data.images[lo:hi], device, batch_size))
        pred.append(predict(model, adv[lo:hi], device, batch_size))
    cat = (lambda t: torch.cat(t) if t else torch.zeros(0, dtype=torch.long))
    parts = w.gather((cat(idx), cat(clean), cat(pred)))
    order = torch.cat([p[0] for p in parts]).argsort()
    return pd.DataFrame({"image_id": data.ids,
                         "clean_pred": torch.cat([p[1] for p in parts])[order].numpy(),
                         "adv_pred": torch.cat([p[2] for p in parts])[order].numpy()})
