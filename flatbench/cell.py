"""One cell: load data, build surrogate and target zoo, craft, store, evaluate, record."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__
from .attacks import build_attack, part_params
from .config import ROLES, CellSettings, attack_kwargs, parse_targets, plain, resolve, to_255
from .data import DATASETS, ImageSet
from .io import atomic_write_text
from .metrics import perturbation_norms, transfer_counts
from .models import load_model, load_surrogate
from .record import build_logger, write_csv
from .registry import ConfigError
from .store import quantize, save_adv

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


def describe(s: CellSettings, attack, data: ImageSet) -> Dict[str, Any]:
    """The effective settings, after each part applied its own defaults (hashed into cell_id)."""
    est = part_params(attack.estimator)
    if "r" in est:
        est["r"] = to_255(attack.alpha if est["r"] is None else est["r"])
    return {
        "data": {k: v for k, v in s.data.items() if k != "default_eps"},
        "n_images": len(data),
        "surrogate": s.surrogate,
        "optimizer": [s.optimizer, part_params(attack.optimizer)],
        "penalty": [s.penalty, est],
        "transforms": [[type(p).__name__.lower(), part_params(p)] for p in (*attack.transforms, *attack.filters)],
        "eps": s.eps, "steps": s.steps, "alpha": round(s.alpha, 6), "norm": s.norm,
        "targeted": s.targeted, "target_rule": s.target_rule if s.targeted else None, "seed": s.seed,
    }


def config_columns(s: CellSettings, attack, data: ImageSet, semantic: Dict[str, Any], cell_id: str) -> Dict[str, Any]:
    est = semantic["penalty"][1]
    tf_cols, tf_labels = {}, []
    for name, params in semantic["transforms"]:
        tf_labels.append(name + "(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")")
        tf_cols.update({f"{name}.{k}": v for k, v in params.items()})
    cols = {
        "dataset": data.name, "n_images": len(data), "surrogate": "+".join(s.surrogate), "attack": attack.label,
        "optimizer": s.optimizer, "penalty": s.penalty, "beta": est.get("beta"), "r": est.get("r"),
        "zeta": est.get("zeta"), "n_samples": est.get("n_samples"), "lookahead": est.get("lookahead"),
        "transforms": "+".join(tf_labels) or "none", "eps": s.eps, "steps": s.steps, "alpha": round(s.alpha, 6),
        "decay": getattr(attack.optimizer, "decay", None), "norm": s.norm, "targeted": s.targeted,
        "target_rule": s.target_rule if s.targeted else "", "seed": s.seed, "cell_id": cell_id,
    }
    cols.update({f"data.{k}": v for k, v in semantic["data"].items() if k != "name"})
    cols.update(tf_cols)
    return cols


def craft(attack, data: ImageSet, y_attack: torch.Tensor, device, batch_size: int, seed: int, progress: bool) -> tuple:
    """Adversarial uint8 images for the whole set, batch by batch, with a progress bar."""
    from tqdm.auto import tqdm

    out = torch.empty_like(data.images)
    t0 = time.perf_counter()
    bar = tqdm(total=len(data), desc=f"craft {attack.label}", unit="img", disable=not progress)
    for lo in range(0, len(data), batch_size):
        hi = min(len(data), lo + batch_size)
        x = data.floats(slice(lo, hi)).to(device)
        # Keyed by the batch's first image index, so a batch's noise does not depend on what ran before it.
        x_adv = attack(x, y_attack[lo:hi].to(device), seed=(seed, lo))
        out[lo:hi] = quantize(x_adv, data.images[lo:hi], attack.eps, attack.norm).cpu()
        bar.update(hi - lo)
    bar.close()
    return out, time.perf_counter() - t0


@torch.inference_mode()
def predict(model: torch.nn.Module, images_u8: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    return torch.cat([model(images_u8[i:i + batch_size].to(device).float() / 255.0).argmax(1).cpu()
                      for i in range(0, len(images_u8), batch_size)])


def run_cell(cfg: DictConfig, out_dir: Path) -> pd.DataFrame:
    """Run the cell described by ``cfg``, writing its outputs to ``out_dir``; returns its rows."""
    out_dir = Path(out_dir)
    s = resolve(cfg)
    zoo = parse_targets(cfg.targets)
    device = pick_device(cfg.device)
    torch.manual_seed(s.seed)
    logger = build_logger(plain(cfg.logger))
    failed = True
    try:
        attack = build_attack(None, max_batch=cfg.max_batch, **attack_kwargs(s))
        data = load_data(s)
        semantic = describe(s, attack, data)
        cell_id = hashlib.sha1(json.dumps(semantic, sort_keys=True, default=str).encode()).hexdigest()[:12]
        logger.start(OmegaConf.to_container(cfg, resolve=True), out_dir, f"{attack.label}-{'+'.join(s.surrogate)}-eps{s.eps:g}")
        zoo_kw = dict(zoo_dir=Path(cfg.paths.zoo_dir), progress=cfg.progress)
        surrogate = load_surrogate(s.surrogate, **zoo_kw).to(device)
        attack.model = surrogate
        log.info("cell %s: %s on %s, %d images of %s, eps=%g/255, device=%s",
                 cell_id, attack.label, "+".join(s.surrogate), len(data), data.name, s.eps, device)
        y_attack = choose_targets(s, data, surrogate, device, cfg.batch_size)
        adv, seconds = craft(attack, data, data.labels if y_attack is None else y_attack, device,
                             cfg.batch_size, s.seed, cfg.progress)
        if cfg.save_images:
            save_adv(out_dir / "adv.safetensors", adv, data.ids)
        base = config_columns(s, attack, data, semantic, cell_id)
        base.update(perturbation_norms(data.images, adv))
        base.update({"craft_seconds": round(seconds, 3), "images_per_second": round(len(data) / max(seconds, 1e-9), 3),
                     "grad_evals": attack.grad_evals, "version": __version__})
        rows, per_image = [], []
        for key, entry in zoo.items():
            model = surrogate if entry["model"] in s.surrogate and len(s.surrogate) == 1 else \
                load_model(entry["model"], **zoo_kw).to(device)
            clean, pred = predict(model, data.images, device, cfg.batch_size), predict(model, adv, device, cfg.batch_size)
            counts = transfer_counts(clean, pred, data.labels, y_attack)
            role = "white-box" if entry["model"] in s.surrogate else ROLES[entry["role"]]
            rows.append({**base, "target": key, "target_model": entry["model"], "role": role, **counts,
                         "n_images": len(data)})
            per_image.append(pd.DataFrame({"cell_id": cell_id, "target": key, "image_id": data.ids,
                                           "label": data.labels.numpy(), "clean_pred": clean.numpy(),
                                           "adv_pred": pred.numpy(),
                                           "attack_target": (y_attack if y_attack is not None else data.labels).numpy()}))
        df = write_csv(out_dir / "results.csv", rows)
        pi = pd.concat(per_image)
        atomic_write_text(out_dir / "predictions.csv", pi.to_csv(index=False))
        atomic_write_text(out_dir / "cell.json", json.dumps({"cell_id": cell_id, "semantic": semantic,
                                                             "craft_seconds": seconds, "version": __version__},
                                                            indent=2, default=str))
        logger.log_rows(df)
        failed = False
        return df
    finally:
        logger.finish(failed=failed)
