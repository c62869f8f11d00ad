"""Stage 3, evaluation: every target's clean and adversarial predictions (ranks share the
batches), with the checks that run before crafting (class space, offline weights)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional

import pandas as pd
import torch

from flatbench.data import ImageSet
from flatbench.cell.dist import World
from flatbench.core.io import atomic_write_text
from flatbench.core.layout import CacheLayout
from flatbench.models import defend, freeze, load_model, load_surrogate
from flatbench.core.registry import ConfigError
from flatbench.cell.store import read_predictions, read_whole

log = logging.getLogger("flatbench")


@torch.inference_mode()
def predict(model: torch.nn.Module, images_u8: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    return torch.cat([model(images_u8[i:i + batch_size].to(device).float() / 255.0).argmax(1).cpu()
                      for i in range(0, len(images_u8), batch_size)])


class TargetModels:
    """The cell's models, each built once: the surrogate on first use (a reused set may never
    need it), and each distinct target; a surrogate already built doubles as its own target."""

    BUILD_KEYS = ("label_offset", "num_classes", "input_size", "pretrained")

    def __init__(self, surrogate_names, zoo_kw, device, data: Optional[ImageSet] = None):
        self.data = data
        self.names, self.kw, self.device = list(surrogate_names), dict(zoo_kw), device
        self.built_surrogate: Optional[torch.nn.Module] = None
        self.cache = {}

    def surrogate(self) -> torch.nn.Module:
        if self.built_surrogate is None:
            self.built_surrogate = load_surrogate(self.names, **self.kw).to(self.device)
            if self.data is not None:
                check_classes(self.built_surrogate, self.data, self.device, f"surrogate {'+'.join(self.names)!r}")
        return self.built_surrogate

    def get(self, entry: Dict[str, Any]) -> torch.nn.Module:
        build = {k: entry[k] for k in self.BUILD_KEYS if entry.get(k) is not None}
        key = (entry["model"], tuple(sorted(build.items())))
        if key not in self.cache:
            own = not build and len(self.names) == 1 and entry["model"] == self.names[0]
            if own and self.built_surrogate is not None:
                self.cache[key] = self.built_surrogate
            else:
                self.cache[key] = load_model(entry["model"], **{**self.kw, **build}).to(self.device)
                if self.data is not None:
                    check_classes(self.cache[key], self.data, self.device, f"target {entry['model']!r}")
        model = self.cache[key]
        if entry.get("defense"):
            model = freeze(defend(model, entry["defense"], name=entry["model"])).to(self.device)
        return model


def precheck_target(entry: Dict[str, Any], data: ImageSet, pretrained: bool) -> bool:
    """Check a target before crafting without building it: its declared class count against the
    data set's labels and, offline, that its weights are cached. False when its config does not
    say enough (the caller builds it and checks on one image instead)."""
    from flatbench.models import source_of

    name = entry["model"]
    source = source_of(name)
    source.check_available(name, entry.get("pretrained", pretrained))
    try:
        k = source.classes(name, entry.get("label_offset"), entry.get("num_classes"))
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


def clean_cache_path(cache_dir, target_key: str, data: ImageSet, device) -> Path:
    """Where a target's clean predictions on a data set are kept: by the target's key (its model
    spec, weights and preprocessing), the data set's content digest and the device type, so no
    cell with another target, other images or another device type can read them."""
    return CacheLayout.clean(cache_dir, f"{target_key}-{data.digest()}-{torch.device(device).type}.csv")


def _read_clean(path, data: ImageSet) -> Optional[torch.Tensor]:
    """The cached clean predictions of these images, or None: missing, or not these images (never
    relabelled: recomputed), or damaged (set aside, then recomputed)."""
    def read(p):
        df = pd.read_csv(p)
        if "clean_pred" not in df.columns or not pd.api.types.is_integer_dtype(df["clean_pred"]):
            raise ValueError("no integer column 'clean_pred'")
        return df

    df = read_whole(Path(path), read)
    if df is None or list(df.get("image_id", pd.Series(dtype=str)).astype(str)) != [str(i) for i in data.ids]:
        return None
    return torch.tensor(df["clean_pred"].to_numpy(copy=True), dtype=torch.long)


def evaluate_target(model: torch.nn.Module, data: ImageSet, adv: torch.Tensor, device, batch_size: int,
                    w: World, clean_path=None, tick=None) -> pd.DataFrame:
    """Clean and adversarial predictions of one target on every image (ranks share the batches).
    The clean ones come from ``clean_path`` when a cell of the same target and images made them
    (rank 0 decides, so the ranks agree), and are written there otherwise (atomically: two cells
    that write at once write the same file)."""
    known = _read_clean(clean_path, data) if clean_path is not None and w.main else None
    known = w.broadcast(known) if w.active else known
    idx, clean, pred = [], [], []
    for i, lo in enumerate(range(0, len(data), batch_size)):
        if not w.mine(i):
            continue
        hi = min(len(data), lo + batch_size)
        idx.append(torch.arange(lo, hi))
        clean.append(known[lo:hi] if known is not None else predict(model, data.images[lo:hi], device, batch_size))
        pred.append(predict(model, adv[lo:hi], device, batch_size))
        if tick is not None:   # a progress bar, per batch of images
            tick(hi - lo)
    cat = (lambda t: torch.cat(t) if t else torch.zeros(0, dtype=torch.long))
    parts = w.gather((cat(idx), cat(clean), cat(pred)))
    order = torch.cat([p[0] for p in parts]).argsort()
    df = pd.DataFrame({"image_id": data.ids,
                       "clean_pred": torch.cat([p[1] for p in parts])[order].numpy(),
                       "adv_pred": torch.cat([p[2] for p in parts])[order].numpy()})
    if clean_path is not None and known is None and w.main:
        try:
            atomic_write_text(clean_path, df[["image_id", "clean_pred"]].to_csv(index=False))
        except OSError:   # a read-only cache: the next cell predicts them again
            pass
    return df


def check_targets(cell, models: TargetModels, pretrained: bool) -> Dict[str, torch.nn.Module]:
    """Before crafting: every target still to evaluate is checked (its class space and, offline,
    its weights), from its config when that says enough; only the others are built now (and
    returned), so startup, paid again on every SLURM requeue, stays short."""
    unchecked = [k for k in cell.todo if not precheck_target(cell.zoo[k], cell.data, pretrained)]
    return {k: models.get(cell.zoo[k]) for k in unchecked}


def evaluate_cell(cell, models: TargetModels, built: Dict[str, torch.nn.Module], batch_size: int, w: World,
                  cache_dir=None, progress: bool = False) -> None:
    """The stage: build the targets not built at startup, predict each target still to evaluate on
    the clean and adversarial images (into the evaluation cache), read the others from it."""
    from tqdm.auto import tqdm

    t_build = time.perf_counter()
    built.update({k: models.get(cell.zoo[k]) for k in cell.todo if k not in built})
    log.info("cell %s: built %d target(s) in %.1f s", cell.cell_id, len(built), time.perf_counter() - t_build)
    bar = tqdm(total=len(built) * len(cell.data), desc="evaluate", unit="img", disable=not progress or not w.main)
    for key in cell.zoo:
        path = cell.store.eval_path(cell.keys[key])
        if key not in built:
            cell.predictions[key] = read_predictions(path, cell.data.ids)
            if cell.predictions[key] is not None:
                continue
            built[key] = models.get(cell.zoo[key])   # set aside since the plan read it whole: evaluate it again
            bar.total += len(cell.data)
        clean = clean_cache_path(cache_dir, cell.keys[key], cell.data, cell.device) if cache_dir else None
        bar.set_postfix_str(key, refresh=False)
        done = bar.n
        cell.predictions[key] = evaluate_target(built[key], cell.data, cell.adv, cell.device, batch_size, w, clean,
                                                tick=bar.update)
        bar.n = done + len(cell.data)   # whole (under several ranks this rank ticked only its own batches)
        bar.refresh()
        cell.evaluated.append(key)
        if w.main:
            atomic_write_text(path, cell.predictions[key].to_csv(index=False))
    bar.close()
    log.info("cell %s: evaluated %d target(s) [%s], reused %d from the cache", cell.cell_id, len(cell.evaluated),
             ", ".join(cell.evaluated), len(cell.zoo) - len(cell.evaluated))
    # The snapshots: every target on each kept step's examples, cached in that step's store.
    for t, adv in sorted(cell.snaps.items()):
        st, preds, now, t0 = cell.snapshots[t], {}, [], time.perf_counter()
        missing = [k for k in cell.zoo if cell.force or not st.has_eval(cell.keys[k], cell.data.ids)]
        missing = w.broadcast(missing) if w.active else missing   # rank 0 decides, so the ranks agree
        for key in cell.zoo:
            path = st.eval_path(cell.keys[key])
            if key not in missing:
                preds[key] = read_predictions(path, cell.data.ids)
                continue
            model = built[key] if key in built else models.get(cell.zoo[key])
            clean = clean_cache_path(cache_dir, cell.keys[key], cell.data, cell.device) if cache_dir else None
            preds[key] = evaluate_target(model, cell.data, adv, cell.device, batch_size, w, clean)
            now.append(key)
            if w.main:
                atomic_write_text(path, preds[key].to_csv(index=False))
        cell.snap_predictions[t] = preds
        log.info("cell %s: step %d evaluated on %d target(s) in %.2f s, %d from the cache", cell.cell_id, t, len(now),
                 time.perf_counter() - t0, len(cell.zoo) - len(now))
