"""Figures that a cell's stage and the report both draw, as PNG bytes (matplotlib, Agg): low in the
package, so that the flatness stage draws its landscape without importing the report."""
from __future__ import annotations

import io
from typing import Dict, Sequence

import pandas as pd


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (110 dpi), closed after."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def landscape_png(frames: Dict[str, pd.DataFrame], image_ids: Sequence[str], title: str = "") -> bytes:
    return png(landscape_figure(frames, image_ids, title))


def landscape_figure(frames: Dict[str, pd.DataFrame], image_ids: Sequence[str], title: str = ""):
    """Side by side landscapes: one row per image; 1-D random, 1-D gradient (all attacks
    overlaid), then one 2-D contour panel per attack. The 2-D panels of the figure share one colour
    scale, the same contour levels and one colour bar, so a flatter landscape looks flatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(frames)
    ncol = 2 + len(names)
    vals = [f.loc[(f["kind"] == "2d") & f["image_id"].isin(list(image_ids)), "loss"].to_numpy() for f in frames.values()]
    vals = [v for v in vals if len(v)]
    vmin, vmax = (min(v.min() for v in vals), max(v.max() for v in vals)) if vals else (0.0, 1.0)
    levels = np.linspace(vmin, vmax if vmax > vmin else vmin + 1e-6, 16)
    cs = None
    fig, axes = plt.subplots(len(image_ids), ncol, figsize=(3.4 * ncol + 0.8, 3.0 * len(image_ids)), squeeze=False,
                             layout="constrained")
    for r, img in enumerate(image_ids):
        two = {}
        for name in names:
            d = frames[name][frames[name]["image_id"] == img]
            for c, kind in enumerate(("random", "gradient")):
                k = d[d["kind"] == kind].sort_values("t")
                axes[r][c].plot(k["t"], k["loss"], marker=".", label=name)
            two[name] = d[d["kind"] == "2d"]
        for c, kind in enumerate(("random direction", "gradient-sign direction")):
            axes[r][c].set_title(f"{img}: {kind}", fontsize=8)
            axes[r][c].set_xlabel("t (units of rho)")
            axes[r][c].set_ylabel("loss")
            axes[r][c].grid(alpha=0.3)
        axes[r][1].legend(fontsize=7)
        for j, name in enumerate(names):
            ax = axes[r][2 + j]
            v = two[name]
            if len(v):
                t = np.sort(v["t"].unique())
                grid = v.pivot_table(index="s", columns="t", values="loss").reindex(index=t, columns=t).to_numpy()
                cs = ax.contourf(t, t, grid, levels=levels, cmap="viridis", extend="both")
            else:
                ax.text(0.5, 0.5, "no 2-D landscape\nfor this image", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"{name}: 2-D random plane", fontsize=8)
    if cs is not None:
        fig.colorbar(cs, ax=[axes[r][c] for r in range(len(image_ids)) for c in range(2, ncol)], fraction=0.03,
                     label="loss (one scale for every 2-D panel)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
