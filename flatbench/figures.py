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
    """Side by side landscapes: one row per image; 1-D random, 1-D gradient (all attacks
    overlaid), then one 2-D contour panel per attack, on a shared colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(frames)
    ncol = 2 + len(names)
    fig, axes = plt.subplots(len(image_ids), ncol, figsize=(3.4 * ncol, 3.0 * len(image_ids)), squeeze=False)
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
        vals = [v["loss"].to_numpy() for v in two.values() if len(v)]
        vmin, vmax = (min(v.min() for v in vals), max(v.max() for v in vals)) if vals else (0, 1)
        for j, name in enumerate(names):
            ax = axes[r][2 + j]
            v = two[name]
            if len(v):
                t = np.sort(v["t"].unique())
                grid = v.pivot_table(index="s", columns="t", values="loss").reindex(index=t, columns=t).to_numpy()
                cs = ax.contourf(t, t, grid, levels=15, vmin=vmin, vmax=vmax, cmap="viridis")
                fig.colorbar(cs, ax=ax, fraction=0.046)
            ax.set_title(f"{name}: 2-D random plane", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return png(fig)
