"""Flatness against transfer: a flatness metric of the cells run with flatness=on, set against
their black-box ASR per cell (Spearman) and per image (fooled or not)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..cell.directory import CellDir
from .plots import png
from .statistics import spearman


# The metrics the family table sets beside transfer (flatbench/flatness.py computes them), by column stem.
FAMILY_METRICS = ("loss", "grad_l2", "sharp_mean", "sharp_max", "sharp_worst", "hess_top")
HEADERS = {"loss": "loss", "grad_l2": "‖∇ℓ‖₂", "sharp_mean": "sharp_mean", "sharp_max": "sharp_max",
           "sharp_worst": "sharp_worst", "hess_top": "λ_max"}


def flatness_table(df: pd.DataFrame) -> tuple:
    """(one row per cell: surrogate, attack, black-box mean ASR and each flatness metric's median;
    Spearman's ρ of each metric against that ASR over the cells). Pure: rows in, numbers out."""
    bb = df[df["role"] != "white-box"]
    metrics = [m for m in FAMILY_METRICS if f"flat_{m}_median" in df.columns]
    agg = {"surrogate": ("surrogate", "first"), "attack": ("attack", "first"), "asr": ("asr", "mean"),
           **{m: (f"flat_{m}_median", "first") for m in metrics}}
    cells = bb.groupby("cell_id").agg(**agg).sort_values(["surrogate", "asr"], ascending=[True, False])
    rho = {m: spearman(cells[m], cells["asr"]) for m in metrics}
    return cells.reset_index(drop=True), rho


def flatness_table_md(cells: pd.DataFrame, rho: dict) -> str:
    metrics = list(rho)
    lines = ["## Black-box transfer beside flatness (medians over images, every cell)", "",
             "| surrogate | attack | black-box mean ASR | " + " | ".join(HEADERS[m] for m in metrics) + " |",
             "|---|---|---:|" + "---:|" * len(metrics)]
    for r in cells.itertuples():
        lines.append(f"| {r.surrogate} | {r.attack} | {r.asr:.1f} | "
                     + " | ".join(f"{getattr(r, m):.3g}" for m in metrics) + " |")
    lines.append(f"| Spearman ρ with the ASR ({len(cells)} cells) | | | "
                 + " | ".join(f"{rho[m]:.2f}" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def flatness_report(df: pd.DataFrame, dirs: Sequence[Path], metric: str) -> tuple:
    """(markdown, per-cell scatter PNG, per-image fooled/not PNG) for one flatness metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col = f"flat_{metric}_median"
    if col not in df.columns:
        raise ValueError(f"--flatness: no column {col!r}; run the cells with flatness=on "
                         f"(metrics: loss, grad_l1, grad_l2, sharp_mean, sharp_max, sharp_worst, hess_top)")
    bb = df[df["role"] != "white-box"]
    cells = bb.groupby("cell_id").agg(asr=("asr", "mean"), flat=(col, "first"), attack=("attack", "first"),
                                      surrogate=("surrogate", "first")).dropna()
    rho_cells = spearman(cells["flat"], cells["asr"])
    frames = []
    for cell in CellDir.find(dirs, "flatness.csv", "predictions.csv"):
        fl = pd.read_csv(cell.file("flatness.csv"))
        fl = fl[fl["at"] == "adv"][["image_id", metric]]
        pr = pd.read_csv(cell.predictions)
        cid = pr["cell_id"].iloc[0]
        roles = df[df["cell_id"] == cid].set_index("target")["role"]
        pr = pr[pr["target"].map(roles).ne("white-box")]
        frames.append(pr.merge(fl, on="image_id"))
    per = pd.concat(frames) if frames else pd.DataFrame(columns=["fooled", metric])
    fooled, kept = per[per["fooled"] == 1][metric], per[per["fooled"] == 0][metric]
    lines = [f"## Flatness ({metric}, median per cell) against transfer (black-box mean ASR)", "",
             f"Spearman rho over {len(cells)} cells: {rho_cells:.3f}", "",
             "| surrogate | attack | " + metric + " (median) | black-box mean ASR |", "|---|---|---:|---:|"]
    for r in cells.sort_values("flat").itertuples():
        lines.append(f"| {r.surrogate} | {r.attack} | {r.flat:.4g} | {r.asr:.1f} |")
    lines += ["", f"Per image and black-box target: median {metric} of examples that fooled the target "
              f"{fooled.median():.4g} (n={len(fooled)}), that did not {kept.median():.4g} (n={len(kept)})."]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for att, g in cells.groupby("attack"):
        ax.scatter(g["flat"], g["asr"], label=att, s=40)
    ax.set_xlabel(f"{metric} at x_adv (median over images)")
    ax.set_ylabel("black-box mean ASR (%)")
    ax.set_title(f"Flatness vs transfer, Spearman rho = {rho_cells:.2f} ({len(cells)} cells)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    scatter = png(fig)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.boxplot([kept.dropna().to_numpy(), fooled.dropna().to_numpy()], showfliers=False)
    ax.set_xticks([1, 2], labels=[f"not fooled (n={len(kept)})", f"fooled (n={len(fooled)})"])
    ax.set_ylabel(f"{metric} at x_adv")
    ax.set_title("Per image, black-box targets", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    family = flatness_table_md(*flatness_table(df))
    return family + "\n" + "\n".join(lines) + "\n", scatter, png(fig), rho_cells
