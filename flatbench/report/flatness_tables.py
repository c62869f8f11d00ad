"""Flatness against transfer: a flatness metric of the cells run with flatness=on, set against
their black-box ASR per cell (Spearman, within each surrogate) and per image (AUROC, within each cell).

The surrogate sets both the ASR level and the flatness level, so a correlation pooled over
surrogates mostly says "which surrogate" (Simpson's paradox: a pooled ρ can have the opposite sign
of both within-surrogate ones). The headline is therefore per surrogate (``flatness_correlation.csv``,
with Holm's adjustment over its metrics × surrogates; a pooled row is kept, labelled ``all``, out of
that family), and per image inside each cell (``flatness_auroc.csv``), where the surrogate and the
method are fixed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from flatbench.cell.directory import CellDir
from flatbench.cell.columns import setting_columns
from flatbench.measures.landscape import png
from flatbench.measures.flatness import METRICS
from flatbench.measures.statistics import auroc, auroc_interval, holm, spearman_test
from flatbench.report.cells import _text
from flatbench.report.partial import (distinct_cells, fill_medians, flatness_partial, partial_markdown, per_image_summary,
                      summary_markdown, with_split)
from flatbench.report.seeds import replicate_markdown
from flatbench.report.mcnemar import spearman

# A cell's example "transferred" when it fooled at least this share of the cell's black-box targets.
TRANSFERRED_SHARE = 0.5


# Every per-image metric of flatness.csv (flatbench/measures/flatness.py's METRICS).
METRIC_STEMS = METRICS
# The metrics the family table sets beside transfer (flatbench/measures/flatness.py computes them), by column stem.
FAMILY_METRICS = ("loss", "grad_l2", "sharp_mean", "sharp_max", "sharp_worst", "sharp_worst_curvature", "hess_top")
HEADERS = {"loss": "loss", "grad_l2": "‖∇ℓ‖₂", "sharp_mean": "sharp_mean", "sharp_max": "sharp_max",
           "sharp_worst": "sharp_worst", "sharp_worst_curvature": "sharp_worst − ρ‖∇ℓ‖₁", "hess_top": "λ_max"}


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


def average_over(df: pd.DataFrame, metrics: Sequence[str], over: str) -> pd.DataFrame:
    """One point per setting but ``over`` (``--over seed``): its cells' black-box mean ASR and each
    metric's median averaged over ``over``, ``n`` the cells averaged. A seed's cells repeat one method
    (the deterministic ones exactly), so counting them as separate points would multiply the evidence
    of each method by the number of seeds and make every p-value too small."""
    if over not in df.columns:
        raise ValueError(f"--over: unknown column {over!r}")
    bb = df[df["role"] != "white-box"]
    keys = [c for c in setting_columns(df.columns) if c != over]
    per_cell = bb.groupby("cell_id", sort=False).agg(**{k: (k, "first") for k in keys}, asr=("asr", "mean"),
                                                     **{m: (f"flat_{m}_median", "first") for m in metrics})
    d = per_cell.assign(**{f"_{k}": per_cell[k].map(_text) for k in keys})
    out = d.groupby([f"_{k}" for k in keys], sort=False).agg(
        surrogate=("surrogate", "first"), attack=("attack", "first"), asr=("asr", "mean"),
        **{m: (m, "mean") for m in metrics}, n=("asr", "size"))
    return out.reset_index(drop=True)


def flatness_correlation(cells: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per (surrogate, metric), then the pooled rows (surrogate ``all``): Spearman's ρ of the
    cells' median metric against their black-box mean ASR, its 95% interval (none at 10 cells or
    fewer), p (exact at 10 cells or fewer) and how (``method``), the cell count, and ``p_holm``: Holm's
    adjustment over the metrics × surrogates of this report, the family of claims it supports. The
    pooled rows are descriptions across surrogates that set the level, not claims: out of the family.
    ``cells`` is :func:`flatness_table`'s first value."""
    out = []
    groups = list(cells.groupby("surrogate", sort=True)) + [("all", cells)]
    for surrogate, g in groups:
        for m in metrics:
            d = g[[m, "asr"]].dropna()
            t = spearman_test(d[m], d["asr"])
            out.append({"surrogate": surrogate, "metric": m, "rho": t["rho"], "ci_low": t["ci_low"],
                        "ci_high": t["ci_high"], "p": t["p"], "n_cells": len(d), "method": t["method"]})
    df = pd.DataFrame(out)
    family = (df["surrogate"] != "all") & df["p"].notna()
    df["p_holm"] = float("nan")
    if family.any():
        df.loc[family, "p_holm"] = holm(df.loc[family, "p"].tolist())
    return df


def flatness_per_image(df: pd.DataFrame, dirs: Sequence[Path]) -> pd.DataFrame:
    """Per (cell, image): each flatness metric at x_adv (and at the clean image, ``clean_<metric>``, where
    measured), how many black-box targets it fooled, of how many."""
    frames = []
    ids = df["cell_id"].astype(str)
    for cell in CellDir.find(dirs, CellDir.FLATNESS, CellDir.PREDICTIONS):
        # A cell id is text: "254476041609" read as a number would match no row.
        pr = pd.read_csv(cell.predictions, dtype={"cell_id": str})
        cid = pr["cell_id"].iloc[0]
        if not (ids == cid).any():   # filtered out of the report
            continue
        roles = df[ids == cid].drop_duplicates("target").set_index("target")["role"]
        pr = pr[pr["target"].map(roles).eq("black-box")]
        counts = pr.groupby("image_id").agg(fooled_targets=("fooled", "sum"), targets=("fooled", "size"))
        fl = pd.read_csv(cell.file(CellDir.FLATNESS))
        clean = fl[fl["at"] == "clean"].drop(columns=["at"]).set_index("image_id").add_prefix("clean_")
        fl = fl[fl["at"] == "adv"].drop(columns=["at"]).merge(clean, left_on="image_id", right_index=True, how="left")
        first = df[ids == cid].iloc[0]
        frames.append(fl.merge(counts.reset_index(), on="image_id").assign(
            cell_id=cid, surrogate=first["surrogate"], attack=first["attack"]))
    if not frames:
        return pd.DataFrame()
    images = pd.concat(frames, ignore_index=True).drop_duplicates(["cell_id", "image_id"])
    rho = df.drop_duplicates("cell_id").set_index("cell_id")["flat_rho"] if "flat_rho" in df.columns else pd.Series()
    return with_split(images, rho)


def flatness_auroc(images: pd.DataFrame, metrics: Sequence[str], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (cell, metric): the AUROC of the metric for telling the cell's examples that
    transferred (fooled at least half of its black-box targets) from those that did not, with a
    bootstrap 95% interval over images (fixed seed). Above 0.5: a larger value goes with transfer (for
    a sharpness, flatter examples transferred less). Empty where one class only occurs."""
    out = []
    if images.empty:
        return pd.DataFrame(columns=["cell_id", "surrogate", "attack", "metric", "auroc", "ci_low", "ci_high",
                                     "n_images", "n_transferred"])
    for cid, g in images.groupby("cell_id", sort=False):
        transferred = (g["fooled_targets"] >= TRANSFERRED_SHARE * g["targets"]) & (g["targets"] > 0)
        for m in metrics:
            if m not in g.columns:
                continue
            ok = g[m].notna()
            a = auroc(g.loc[ok, m], transferred[ok])
            lo, hi = auroc_interval(g.loc[ok, m].to_numpy(), transferred[ok].to_numpy(), n_boot, seed)
            out.append({"cell_id": cid, "surrogate": g["surrogate"].iloc[0], "attack": g["attack"].iloc[0],
                        "metric": m, "auroc": a, "ci_low": lo, "ci_high": hi, "n_images": int(ok.sum()),
                        "n_transferred": int(transferred[ok].sum())})
    return pd.DataFrame(out)


def flatness_table_md(cells: pd.DataFrame, rho: dict) -> str:
    metrics = list(rho)
    lines = ["## Black-box transfer beside flatness (medians over images, every cell)", "",
             "| surrogate | attack | black-box mean ASR | " + " | ".join(HEADERS[m] for m in metrics) + " |",
             "|---|---|---:|" + "---:|" * len(metrics)]
    for r in cells.itertuples():
        lines.append(f"| {r.surrogate} | {r.attack} | {r.asr:.1f} | "
                     + " | ".join(f"{getattr(r, m):.3g}" for m in metrics) + " |")
    for surrogate, g in cells.groupby("surrogate", sort=True):
        lines.append(f"| Spearman ρ with the ASR, {surrogate} ({len(g)} cells) | | | "
                     + " | ".join(f"{spearman(g[m], g['asr']):.2f}" for m in metrics) + " |")
    lines.append(f"| pooled over surrogates ({len(cells)} cells; not a finding: the surrogate sets both levels) | | | "
                 + " | ".join(f"{rho[m]:.2f}" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def correlation_markdown(corr: pd.DataFrame) -> str:
    """Every metric's correlation across settings, per surrogate, with its Holm adjustment."""
    lines = ["## Every metric against the black-box mean ASR, across settings, per surrogate", "",
             "| surrogate | metric | points | Spearman ρ | p | Holm p | how |", "|---|---|---:|---:|---:|---:|---|"]
    for r in corr[corr["surrogate"] != "all"].itertuples():
        holm_p = "" if pd.isna(r.p_holm) else f"{r.p_holm:.2g}"
        lines.append(f"| {r.surrogate} | {r.metric} | {r.n_cells} | {r.rho:+.2f} | {r.p:.2g} | {holm_p} | {r.method} |")
    lines += ["", "Holm's adjustment runs over these rows (the metrics × surrogates of this report); pooled rows "
              "(surrogate 'all', flatness_correlation.csv) describe neither surrogate and are out of it."]
    return "\n".join(lines) + "\n"


def flatness_report(df: pd.DataFrame, dirs: Sequence[Path], metric: str, over: Optional[str] = None) -> dict:
    """flatness.md, the per-surrogate scatter, the per-image box plot, flatness_correlation.csv and
    flatness_auroc.csv for one flatness metric (the CSVs cover every metric the cells have). With
    ``over`` (seed), the correlation across cells is over settings, each averaged over ``over``
    (:func:`average_over`); the per-image AUROCs stay per cell."""
    col = f"flat_{metric}_median"
    images = flatness_per_image(df, dirs)
    df = fill_medians(df, images, METRIC_STEMS)   # cells measured before a metric existed (the split of sharp_worst)
    if col not in df.columns:
        raise ValueError(f"--flatness: no column {col!r}; run the cells with flatness=on "
                         f"(metrics: {', '.join(METRIC_STEMS)})")
    bb = df[df["role"] != "white-box"]
    cells = bb.groupby("cell_id").agg(asr=("asr", "mean"), flat=(col, "first"), attack=("attack", "first"),
                                      surrogate=("surrogate", "first")).dropna()
    rho_cells = spearman(cells["flat"], cells["asr"])
    family, rho = flatness_table(df)
    replicates = ""
    if over:
        cells = average_over(df, [metric], over).rename(columns={metric: "flat"}).dropna(subset=["flat"])
        corr = flatness_correlation(average_over(df, list(rho), over), list(rho))
        per = {v: flatness_correlation(average_over(df[df[over] == v], list(rho), over), list(rho))
               for v in sorted(df[over].unique())}
        replicates = replicate_markdown(corr, per, over)
    else:
        corr = flatness_correlation(family, list(rho))
    if metric not in rho:   # a metric outside the family table (grad_l1)
        corr = pd.concat([corr, flatness_correlation(cells.rename(columns={"flat": metric}), [metric])],
                         ignore_index=True)
    au = flatness_auroc(images, [m for m in METRIC_STEMS if not images.empty and m in images.columns])
    part = flatness_partial(images, METRIC_STEMS)
    head = corr[corr["metric"] == metric]
    lines = [f"## Flatness ({metric}, median per cell) against transfer (black-box mean ASR), per surrogate", ""]
    if over:
        lines += [f"Each point is one setting, its cells averaged over {over} (the {over}s of a setting repeat one "
                  "method, so they are not separate points); 'cells' counts those points.", ""]
    lines += ["| surrogate | cells | Spearman ρ | 95% CI | p |", "|---|---:|---:|---|---:|"]
    for r in head.itertuples():
        name = r.surrogate if r.surrogate != "all" else "all (pooled: not a finding, the surrogate sets both levels)"
        lines.append(f"| {name} | {r.n_cells} | {r.rho:.2f} | [{r.ci_low:.2f}, {r.ci_high:.2f}] | {r.p:.3g} |")
    lines += ["", "| surrogate | attack | " + metric + " (median) | black-box mean ASR |", "|---|---|---:|---:|"]
    for r in cells.sort_values(["surrogate", "flat"]).itertuples():
        lines.append(f"| {r.surrogate} | {r.attack} | {r.flat:.4g} | {r.asr:.1f} |")
    sub = au[au["metric"] == metric] if not au.empty else au
    lines += ["", f"## Per image, within each cell: AUROC of {metric} for the examples that transferred "
              f"(fooled at least half of the cell's black-box targets)", "",
              "| surrogate | attack | AUROC | 95% CI (bootstrap over images) | images | transferred |",
              "|---|---|---:|---|---:|---:|"]
    for r in sub.itertuples():
        auc = "" if pd.isna(r.auroc) else f"{r.auroc:.2f}"
        ci = "" if pd.isna(r.ci_low) else f"[{r.ci_low:.2f}, {r.ci_high:.2f}]"
        lines.append(f"| {r.surrogate} | {r.attack} | {auc} | {ci} | {r.n_images} | {r.n_transferred} |")
    lines += ["", "AUROC 0.5: the metric does not tell them apart; above: larger values went with transfer; "
              "an interval that contains 0.5 is no detectable difference."]
    scatter, box = _scatter_png(cells, head, metric), _auroc_png(sub, metric)
    md = "\n".join([flatness_table_md(family, rho), correlation_markdown(corr), "\n".join(lines), "",
                    partial_markdown(part, metric), summary_markdown(per_image_summary(au, part, distinct_cells(images))),
                    *([replicates] if replicates else [])])   # last: the tables before it keep their numbers
    return {"md": md, "scatter": scatter, "box": box, "rho": rho_cells, "correlation": corr, "auroc": au,
            "partial": part}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scatter_png(cells: pd.DataFrame, head: pd.DataFrame, metric: str) -> bytes:
    """One panel per surrogate: each cell's median metric against its black-box mean ASR."""
    plt = _plt()
    surrogates = sorted(cells["surrogate"].unique())
    fig, axes = plt.subplots(1, max(1, len(surrogates)), figsize=(5 * max(1, len(surrogates)), 4.5), squeeze=False)
    for ax, sur in zip(axes[0], surrogates):
        g = cells[cells["surrogate"] == sur]
        for att, h in g.groupby("attack"):
            ax.scatter(h["flat"], h["asr"], label=att, s=40)
        r = head[head["surrogate"] == sur]
        rho_s = float(r["rho"].iloc[0]) if len(r) else float("nan")
        ax.set_title(f"surrogate {sur}: Spearman rho = {rho_s:.2f} ({len(g)} cells)", fontsize=9)
        ax.set_xlabel(f"{metric} at x_adv (median over images)")
        ax.set_ylabel("black-box mean ASR (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def _auroc_png(sub: pd.DataFrame, metric: str) -> bytes:
    return png(auroc_figure(sub, metric))


def auroc_figure(sub: pd.DataFrame, metric: str):
    """Each cell's per-image AUROC with its bootstrap interval; a cell without one says why in its place."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * max(1, len(sub))), 4.5))
    if len(sub):
        ax.errorbar(range(len(sub)), sub["auroc"], yerr=[(sub["auroc"] - sub["ci_low"]).fillna(0),
                                                         (sub["ci_high"] - sub["auroc"]).fillna(0)], fmt="o")
        ax.set_xticks(range(len(sub)), labels=[f"{a}\n{s_}" for a, s_ in zip(sub["attack"], sub["surrogate"])],
                      fontsize=6, rotation=60)
        for x, r in enumerate(sub.itertuples()):
            if pd.isna(r.auroc):
                ax.text(x, 0.5, auroc_missing(r.n_images, r.n_transferred), rotation=90, ha="center", va="center",
                        fontsize=6, color="grey")
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_ylabel(f"AUROC of {metric}: transferred vs not")
    ax.set_title("Per image, within each cell (95% bootstrap intervals)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def auroc_missing(n_images: int, n_transferred: int) -> str:
    """Why a cell has no AUROC: it needs examples that transferred and examples that did not."""
    if not n_images:
        return "no AUROC: no image measured"
    if n_transferred == 0:
        return f"no AUROC: none of {n_images} transferred"
    return f"no AUROC: all {n_images} transferred"
