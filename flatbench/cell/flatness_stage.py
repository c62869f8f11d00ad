"""Stage 4 (flatness=on), flatness measurement: the surrogate's flatness metrics at the stored
adversarial images (and clean ones), per image into flatness.csv, the landscape of the first
images into landscape.csv/png; the metrics themselves are :mod:`flatbench.measures.flatness`."""
from __future__ import annotations

import logging
from typing import Dict

import pandas as pd
import torch

from flatbench.cell.settings import CellSettings
from flatbench.core.units import to_255
from flatbench.data import ImageSet
from flatbench.cell.directory import CellDir
from flatbench.core.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger("flatbench")


def measure_flatness(model, data: ImageSet, adv: torch.Tensor, y: torch.Tensor, s: CellSettings, flat, device,
                     batch_size: int, cell_dir: CellDir, progress: bool, label: str) -> Dict[str, float]:
    """Flatness metrics of the surrogate at the stored adversarial images (and clean ones).

    Writes flatness.csv (per image), landscape.csv and landscape.png (the first images) into
    the cell directory; returns the aggregated columns for the rows.
    """
    from tqdm.auto import tqdm

    from flatbench.measures.flatness import METRICS, aggregate, landscape, metrics, model_loss
    from flatbench.measures.landscape import landscape_png

    where = [("adv", adv)] + ([("clean", data.images)] if flat.at_clean else [])
    frames, cols = [], {}
    for at, images in where:
        per = {m: [] for m in METRICS}
        # In images, moved after each part of a batch's metrics (a batch of 64 can take a minute).
        bar = tqdm(total=len(data), desc=f"flatness ({at})", unit="img", disable=not progress,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} img [{elapsed}<{remaining}]")
        for lo in range(0, len(data), batch_size):
            hi = min(len(data), lo + batch_size)
            x = images[lo:hi].to(device).float() / 255.0
            fn = model_loss(model, y[lo:hi], s.targeted)
            tick = (lambda share, n=hi - lo: bar.update(share * n))
            for m, v in metrics(fn, x, data.ids[lo:hi], flat, seed=s.seed, tick=tick).items():
                per[m] += v.tolist()
            bar.n = hi   # whole again at the batch's end
            bar.refresh()
        bar.close()
        frames.append(pd.DataFrame({"image_id": data.ids, "at": at, **per}))
        cols.update(aggregate(per, prefix="flat" if at == "adv" else "flat_clean"))
    atomic_write_text(cell_dir.file(cell_dir.FLATNESS), pd.concat(frames).to_csv(index=False))
    n = min(flat.landscape_images, len(data))
    if n:
        x = adv[:n].to(device).float() / 255.0
        rows = landscape(model_loss(model, y[:n], s.targeted), x, data.ids[:n], flat, seed=s.seed)
        land = pd.DataFrame(rows)
        atomic_write_text(cell_dir.file(cell_dir.LANDSCAPE_CSV), land.to_csv(index=False))
        atomic_write_bytes(cell_dir.file(cell_dir.LANDSCAPE_PNG), landscape_png({label: land}, data.ids[:n],
                                                                    title=f"{label}: loss around x_adv"))
    cols["flat_rho"] = to_255(flat.rho)
    if flat.model is not None:   # a column only when set: rows measured on the surrogate stay as they were
        cols["flat_model"] = flat.model
    return cols


def flatness_cell(cell, st, models) -> None:
    """The stage, when ``flatness.enabled``: the columns it adds go to ``cell.flat_columns``."""
    if st.flatness is not None:
        # flatness.model: another model's loss at the same examples (LGV's examples on the base digits-resnet).
        model = models.surrogate() if st.flatness.model is None else models.get({"model": st.flatness.model})
        cell.flat_columns = measure_flatness(model, cell.data, cell.adv, cell.y_craft, cell.settings, st.flatness,
                                             cell.device, st.run.batch_size, cell.directory, st.run.progress, cell.attack.label)
