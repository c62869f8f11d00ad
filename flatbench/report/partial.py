"""Flatness apart from the loss (``--flatness``): per cell, does a flatness metric still go with
transfer once the example's loss is known, and once the clean image's own flatness is known?

A sharp example often has a large loss and a large gradient, and both predict transfer on their
own; a metric that only restates them says nothing about flatness. ``flatness_partial.csv`` has,
per (cell, metric), Spearman's partial correlation between the metric at x_adv and the number of
black-box targets the example fooled, given the example's loss (``partial_rho``, with its interval),
and, where the cells measured the clean images too (``flatness.at_clean=true``), given the loss and
the same metric at the clean image (``partial_rho_clean``): an image that is sharp before the
attack is not evidence that the attack found a sharp maximum.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from flatbench.measures.flatness import split_worst
from flatbench.measures.statistics import partial_spearman

SPLIT = ("sharp_worst_linear", "sharp_worst_curvature")


def with_split(images: pd.DataFrame, rho: pd.Series) -> pd.DataFrame:
    """``images`` with sharp_worst's first-order part and remainder (flatbench.measures.flatness.split_worst)
    where the cells were measured before those columns existed (missing, or NaN in the rows of such
    cells merged with newer ones); ``rho``: each cell's flatness radius in 1/255 units (``flat_rho``)."""
    if images.empty or "sharp_worst" not in images.columns:
        return images
    images = images.copy()
    r = images["cell_id"].map(rho).astype(float) / 255.0
    for prefix in ("", "clean_"):
        if f"{prefix}sharp_worst" in images.columns:
            lin, rest = split_worst(images[f"{prefix}sharp_worst"], images[f"{prefix}grad_l1"], r)
            for col, derived in zip(SPLIT, (lin, rest)):
                col = prefix + col
                images[col] = images[col].fillna(derived) if col in images.columns else derived
    return images


def fill_medians(df: pd.DataFrame, images: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The rows with ``flat_<metric>_median`` from the per-image values where a cell's rows lack it."""
    if images.empty:
        return df
    med = images.groupby("cell_id")[[m for m in metrics if m in images.columns]].median()
    df = df.copy()
    for m in med.columns:
        col = f"flat_{m}_median"
        filled = df["cell_id"].map(med[m])
        df[col] = df[col].fillna(filled) if col in df.columns else filled
    return df


def flatness_partial(images: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per (cell, metric): partial_rho (given the loss), its interval, p, and with clean-image
    measurements partial_rho_clean (given the loss and the metric at the clean image)."""
    cols = ["cell_id", "surrogate", "attack", "metric", "partial_rho", "ci_low", "ci_high", "p", "n_images",
            "partial_rho_clean", "ci_low_clean", "ci_high_clean", "p_clean"]
    out = []
    for cid, g in ([] if images.empty else images.groupby("cell_id", sort=False)):
        for m in metrics:
            if m == "loss" or m not in g.columns:
                continue
            d = g.dropna(subset=[m, "loss", "fooled_targets"])
            t = partial_spearman(d[m], d["fooled_targets"], [d["loss"]])
            row = {"cell_id": cid, "surrogate": g["surrogate"].iloc[0], "attack": g["attack"].iloc[0], "metric": m,
                   "partial_rho": t["rho"], "ci_low": t["ci_low"], "ci_high": t["ci_high"], "p": t["p"],
                   "n_images": len(d)}
            if f"clean_{m}" in g.columns:
                c = d.dropna(subset=[f"clean_{m}"])
                tc = partial_spearman(c[m], c["fooled_targets"], [c["loss"], c[f"clean_{m}"]])
                row.update(partial_rho_clean=tc["rho"], ci_low_clean=tc["ci_low"], ci_high_clean=tc["ci_high"],
                           p_clean=tc["p"])
            out.append(row)
    return pd.DataFrame(out, columns=cols)


def _num(v, fmt: str = ".2f") -> str:
    return "" if pd.isna(v) else format(v, fmt)


def partial_markdown(part: pd.DataFrame, metric: str) -> str:
    sub = part[part["metric"] == metric].sort_values(["surrogate", "attack"], kind="stable")
    lines = [f"## Per image, apart from the loss: Spearman's partial ρ of {metric} with the black-box targets "
             "fooled, given the example's loss", "",
             "| surrogate | attack | partial ρ | 95% CI | given the clean image's too | 95% CI | images |",
             "|---|---|---:|---|---:|---|---:|"]

    for r in sub.itertuples():
        ci = "" if pd.isna(r.ci_low) else f"[{r.ci_low:.2f}, {r.ci_high:.2f}]"
        cic = "" if pd.isna(r.ci_low_clean) else f"[{r.ci_low_clean:.2f}, {r.ci_high_clean:.2f}]"
        lines.append(f"| {r.surrogate} | {r.attack} | {_num(r.partial_rho)} | {ci} | {_num(r.partial_rho_clean)} | "
                     f"{cic} | {r.n_images} |")
    lines += ["", "Ranks, the residuals of a linear fit on the loss's rank (and the clean image's metric's, when the "
              "cells measured clean images: flatness.at_clean=true), Pearson's r of the residuals; an interval that "
              "contains 0 is no detectable relation beyond the loss (flatness_partial.csv: every metric)."]
    return "\n".join(lines) + "\n"


def distinct_cells(images: pd.DataFrame) -> set:
    """The cells that crafted examples of their own: a deterministic method's seeds craft the same
    examples (the same loss at every image, to the last digit), and only the first of them counts."""
    seen, keep = set(), set()
    for cid, g in ([] if images.empty else images.groupby("cell_id", sort=False)):
        key = (g["surrogate"].iloc[0], g["attack"].iloc[0], tuple(g.sort_values("image_id")["loss"].round(7)))
        if key not in seen:
            seen.add(key)
            keep.add(cid)
    return keep


def per_image_summary(au: pd.DataFrame, part: pd.DataFrame, cells: set) -> pd.DataFrame:
    """Per (surrogate, metric), over the ``cells`` (distinct_cells): the median per-image AUROC and how
    many intervals lie above / below 0.5; the median partial ρ given the loss (and given the clean
    image's metric too) and how many intervals lie above / below 0."""
    a = au[au["cell_id"].isin(cells)].dropna(subset=["auroc"]) if len(au) else au
    p = part[part["cell_id"].isin(cells)].dropna(subset=["partial_rho"]) if len(part) else part
    out = []
    keys = sorted(set(zip(a["surrogate"], a["metric"])) | set(zip(p["surrogate"], p["metric"]))) if len(a) or len(p) else []
    for sur, m in keys:
        ga = a[(a["surrogate"] == sur) & (a["metric"] == m)] if len(a) else a
        gp = p[(p["surrogate"] == sur) & (p["metric"] == m)] if len(p) else p
        gc = gp.dropna(subset=["partial_rho_clean"]) if len(gp) else gp
        out.append({"surrogate": sur, "metric": m, "cells": len(ga),
                    "auroc_median": ga["auroc"].median() if len(ga) else float("nan"),
                    "auroc_above": int((ga["ci_low"] > 0.5).sum()) if len(ga) else 0,
                    "auroc_below": int((ga["ci_high"] < 0.5).sum()) if len(ga) else 0,
                    "partial_cells": len(gp),
                    "partial_median": gp["partial_rho"].median() if len(gp) else float("nan"),
                    "partial_above": int((gp["ci_low"] > 0).sum()) if len(gp) else 0,
                    "partial_below": int((gp["ci_high"] < 0).sum()) if len(gp) else 0,
                    "clean_cells": len(gc),
                    "clean_above": int((gc["ci_low_clean"] > 0).sum()) if len(gc) else 0,
                    "clean_below": int((gc["ci_high_clean"] < 0).sum()) if len(gc) else 0})
    return pd.DataFrame(out)


def summary_markdown(summary: pd.DataFrame) -> str:
    lines = ["## Per image, every metric: distinct cells whose interval lies above or below no relation", "",
             "| surrogate | metric | cells | median AUROC | AUROC above 0.5 | below | median partial ρ (given the loss) "
             "| above 0 | below 0 | given the clean image's too: above 0 | below 0 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary.itertuples():
        clean = (f"{r.clean_above} of {r.clean_cells} | {r.clean_below}" if r.clean_cells else " | ")
        lines.append(f"| {r.surrogate} | {r.metric} | {r.cells} | {_num(r.auroc_median)} | {r.auroc_above} | "
                     f"{r.auroc_below} | {_num(r.partial_median)} | {r.partial_above} | {r.partial_below} | {clean} |")
    lines += ["", "A deterministic method's seeds craft the same examples and count once. AUROC: the metric telling "
              "the examples that fooled at least half of the black-box targets from the others; partial ρ: the metric "
              "against the number of black-box targets fooled, the loss held fixed (flatness_partial.csv)."]
    return "\n".join(lines) + "\n"
