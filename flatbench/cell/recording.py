"""Stage 5, recording: the cell's rows (every setting a column, one row per target) and its
files; cell.json goes last, because it marks the cell finished."""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Dict, List

import pandas as pd
import torch

from flatbench import __version__
from flatbench.cell.settings import ROLES
from flatbench.core.io import atomic_write_text
from flatbench.cell.provenance import provenance, provenance_columns
from flatbench.measures.transfer import perturbation_norms, success_flags, transfer_counts, visibility
from flatbench.cell.columns import settings_columns
from flatbench.cell.loggers import write_csv
from flatbench.cell.store import save_adv
from flatbench.cell.directory import CellDir

log = logging.getLogger("flatbench")


def target_role(entry: Dict[str, Any], surrogate: List[str]) -> str:
    """White-box for a surrogate itself and for the model a surrogate's weights were derived from (the
    base of an LGV set: its snapshots are the base's weights moved by a few epochs of SGD), so that a
    black-box mean never counts it; else the target's own role."""
    from flatbench.models import source_of

    own = set(surrogate) | {b for n in surrogate for b in source_of(n).derived_from(n)}
    return "white-box" if entry["model"] in own and not entry.get("defense") else ROLES[entry["role"]]



def record_skipped(cell) -> None:
    """skipped.csv: the images a folder data set skipped (skip_bad_images=true), kept with the cell."""
    skipped = cell.data.meta.get("skipped") or []
    if skipped:
        path = cell.directory.file(CellDir.SKIPPED)
        atomic_write_text(path, pd.DataFrame(skipped).to_csv(index=False))
        log.warning("%d bad image(s) skipped (skip_bad_images=true); list in %s", len(skipped), path)


def adv_digest(adv) -> str:
    """A digest of the adversarial set's 8-bit pixels: two cells crafted the same images exactly when
    their digests agree (the report counts a repeated pair of seeds once)."""
    pixels = (adv.detach().cpu().float() * 255).round().clamp(0, 255).to(torch.uint8)
    return hashlib.sha1(pixels.contiguous().numpy().tobytes()).hexdigest()[:16]


def record_cell(cell, st) -> pd.DataFrame:
    """The stage: one row per target (every setting a column, the counts and rates, the crafting
    cost), predictions.csv (per image and target), the set itself (save_images) and cell.json."""
    s, data, meta = cell.settings, cell.data, cell.craft_meta
    seconds = float(meta.get("craft_seconds", float("nan")))
    base = settings_columns(cell.semantic, cell.attack.label, data.name, cell.cell_id, experiment=st.run.name)
    base.update(cell.flat_columns)
    base.update(perturbation_norms(data.images, cell.adv))
    base.update(visibility(data.images, cell.adv))
    base["adv_digest"] = adv_digest(cell.adv)
    base.update({"craft_seconds": round(seconds, 3), "images_per_second": round(len(data) / max(seconds, 1e-9), 3),
                 # what crafting the whole set costs, in today's unit (single-model passes), also for a set
                 # reused or resumed (a resumed craft counted only its own batches; an old set, an ensemble once)
                 "grad_evals": cell.attack.predicted_grad_evals(len(data)), "chunk": meta.get("chunk"),
                 "memory_format": meta.get("memory_format", ""), "version": __version__,
                 # the request, when the cell's knob came from budget=B (a label: the settings are the columns)
                 "budget": s.budget["budget"] if s.budget else None, "step": s.steps})
    origin = provenance(cell.device, s.surrogate, {k: e["model"] for k, e in cell.zoo.items()}, st.paths.zoo_dir)
    base.update(provenance_columns(origin))
    rows, per_image = _rows(cell, base, cell.predictions)
    # The snapshots: the same cell's rows at earlier steps (their examples, their cost so far; the
    # flatness columns describe the last step's examples only, so they are left empty here).
    snap_rows, snap_images = [], []
    for t, adv in sorted(cell.snaps.items()):
        at = {**{k: (None if k.startswith("flat_") else v) for k, v in base.items()},
              **perturbation_norms(data.images, adv), **visibility(data.images, adv),
              "grad_evals": cell.attack.predicted_grad_evals(len(data), t), "step": t}
        r, p = _rows(cell, at, cell.snap_predictions[t])
        snap_rows += r
        snap_images += [q.assign(step=t) for q in p]
    # cell.json goes last: it marks the cell finished, and the report reads only cells that have it.
    cell_dir = cell.directory
    if st.run.save_images:
        save_adv(cell_dir.adv, cell.adv, data.ids, cell.cell_id)
    atomic_write_text(cell_dir.predictions, pd.concat(per_image).to_csv(index=False))
    if snap_rows:
        atomic_write_text(cell_dir.snapshot_predictions, pd.concat(snap_images).to_csv(index=False))
        write_csv(cell_dir.snapshots, snap_rows)
    df = write_csv(cell_dir.results, rows)
    cell_dir.write_meta({
        "cell_id": cell.cell_id, "semantic": cell.semantic, "targets": cell.keys, "evaluated": cell.evaluated,
        "reused": [k for k in cell.zoo if k not in cell.evaluated], "craft_seconds": seconds, "version": __version__,
        "flatness": cell.flatness, "adv_store": str(cell.store.full), "provenance": origin,
        "snapshots": sorted(cell.snaps)})
    return df


def _rows(cell, base: Dict[str, Any], predictions: Dict[str, pd.DataFrame]) -> tuple:
    """One row per target (``base`` and its counts) and the per-image predictions behind them."""
    s, data = cell.settings, cell.data
    rows, per_image = [], []
    for key, entry in cell.zoo.items():
        pt = predictions[key]
        clean, pred = (torch.as_tensor(pt[c].to_numpy().copy()) for c in ("clean_pred", "adv_pred"))
        counts = transfer_counts(clean, pred, data.labels, cell.y_attack)
        rows.append({**base, "target": key, "target_model": entry["model"], "role": target_role(entry, s.surrogate),
                     **counts})
        fooled = success_flags(pred, data.labels, cell.y_attack).numpy()
        per_image.append(pd.DataFrame({"cell_id": cell.cell_id, "target": key, "image_id": data.ids,
                                       "label": data.labels.numpy(), "clean_pred": clean.numpy(),
                                       "adv_pred": pred.numpy(), "attack_target": cell.y_craft.numpy(),
                                       "fooled": fooled.astype(int)}))
    return rows, per_image
