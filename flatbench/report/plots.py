"""The report's figures: the transfer heatmap, ASR against a swept setting, two attacks' loss
landscapes side by side. Each returns PNG bytes; the command writes them."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from flatbench.cell.directory import CellDir
from flatbench.measures.landscape import landscape_png, png
from flatbench.report.tables import _key_strings, row_keys

MAX_LABELLED_ROWS = 80   # rows the heatmap names and numbers
MAX_HEIGHT_IN = 40.0     # its height, whatever the number of rows


def heatmap_labels(table: pd.DataFrame) -> list:
    """Each row's label: the index fields that vary between rows, named (``attack=PGN, zeta=3``); a
    field that is the same in every row says nothing about the row (the title gives it), and a field a
    row does not have ('-': I-FGSM has no zeta) is left out of that row's label."""
    rows = [i if isinstance(i, tuple) else (i,) for i in table.index]
    names = [str(n) if n is not None else f"field {k}" for k, n in enumerate(table.index.names)]
    varying = [k for k in range(len(names)) if len({str(r[k]) for r in rows}) > 1] or [0]
    show = (lambda k, v: str(v)) if len(varying) == 1 else (lambda k, v: f"{names[k]}={v}")
    return [", ".join(show(k, r[k]) for k in varying if str(r[k]) != "-") for r in rows]


def heatmap_png(table: pd.DataFrame, white: pd.DataFrame, value: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    labels = heatmap_labels(table)
    n = len(table)
    # Past a screenful of rows, numbers and names in every cell are unreadable and cost minutes
    # to draw (a study of thousands of cells): the picture keeps every row, table.md the numbers.
    readable = n <= MAX_LABELLED_ROWS
    # The width leaves room for the row labels (about 0.07 in per character); constrained layout keeps
    # the labels and the colour bar's numbers inside the figure.
    label_in = 0.07 * max((len(x) for x in labels), default=10) if readable else 0.5
    fig, ax = plt.subplots(figsize=(1.1 * len(table.columns) + 2.5 + label_in, min(0.45 * n, MAX_HEIGHT_IN) + 1.8),
                           layout="constrained")
    im = ax.imshow(table.values.astype(float), cmap="viridis", vmin=0, vmax=100, aspect="auto",
                   interpolation="nearest")
    ax.set_xticks(range(len(table.columns)), labels=list(table.columns), rotation=35, ha="right")
    if readable:
        ax.set_yticks(range(n), labels=labels)
    else:
        ax.set_yticks([])
        ax.set_ylabel(f"{n} rows, in table.md's order (too many to label)")
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            v = table.values[i, j]
            if readable and not pd.isna(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="white" if v < 60 else "black", fontsize=8)
            if white.values[i, j] and readable:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    if not readable:   # the white-box columns, marked once instead of per cell
        for j in range(table.shape[1]):
            if white.values[:, j].any():
                ax.add_patch(Rectangle((j - 0.5, -0.5), 1, n, fill=False, edgecolor="red", lw=2))
    fig.colorbar(im, ax=ax, label=f"{value} (%)")
    rows = [i if isinstance(i, tuple) else (i,) for i in table.index]
    fixed = [f"{n}={rows[0][k]}" for k, n in enumerate(table.index.names)
             if n is not None and n != "attack" and len({str(r[k]) for r in rows}) == 1 and str(rows[0][k]) != "-"]
    ax.set_title("Transfer success rate (red box: white-box)" + (f"\n{', '.join(fixed)}" if fixed else ""), fontsize=10)
    return png(fig)


def param_plot_png(df: pd.DataFrame, param: str, value: str = "asr") -> bytes:
    """ASR against a swept parameter, one line per target (with Wilson 95% bands), per attack panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if param not in df.columns:
        raise ValueError(f"--plot-param: unknown column {param!r}")
    d = df[df[param].notna()].copy()
    if d[param].nunique() < 2:
        raise ValueError(f"--plot-param: {param!r} takes fewer than 2 values in these cells")
    # One panel per combination of the other settings that vary, so no point averages two cells.
    panel_keys = [k for k in row_keys(d) if k != param]
    if d.assign(_p=_key_strings(d, panel_keys).agg("|".join, axis=1)).duplicated(["_p", "target", param]).any():
        raise ValueError(f"--plot-param {param}: cells that differ only along {param} and settings tied to it "
                         "cannot be told apart; --filter the others")
    groups = [g for g in d.groupby(_key_strings(d, panel_keys).agg(" | ".join, axis=1), sort=False)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4), squeeze=False)
    for ax, (title, g) in zip(axes[0], groups):
        for target, t in g.groupby("target", sort=False):
            t = t[[param, value, "asr_ci_low", "asr_ci_high"]].sort_values(param)
            ax.plot(t[param], t[value], marker="o", label=target)
            if value == "asr":
                ax.fill_between(t[param], t["asr_ci_low"], t["asr_ci_high"], alpha=0.15)
        ax.set_xlabel(param)
        ax.set_ylabel(f"{value} (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return png(fig)


def landscape_compare(df: pd.DataFrame, dirs: Sequence[Path], a: str, b: str) -> bytes:
    """Side-by-side landscapes of attacks a and b on the same images (cells paired as for McNemar)."""
    frames = {}
    for name in (a, b):
        ids = set(df[df["attack"] == name]["cell_id"])
        for cell in CellDir.find(dirs, CellDir.LANDSCAPE_CSV):
            if cell.cell_id() in ids and name not in frames:
                frames[name] = pd.read_csv(cell.file(CellDir.LANDSCAPE_CSV))
        if name not in frames:
            raise ValueError(f"--landscape: no landscape.csv for attack {name!r} (run it with flatness=on)")
    images = [i for i in dict.fromkeys(frames[a]["image_id"]) if i in set(frames[b]["image_id"])]
    if not images:
        raise ValueError("--landscape: the two attacks' landscapes share no image")
    return landscape_png(frames, images, title=f"{a} vs {b}: loss around x_adv")
