"""The report's compute axis: transfer against the gradient evaluations spent.

``compute.csv`` has one row per (cell, step): the cell's black-box mean ASR (the mean over the
targets that are not the surrogate, as table.md's 'black-box mean') at the gradient evaluations
per image it had spent. A cell without snapshots has one row, at its last step; with
``snapshots=[...]`` each kept step is a row of its own (the ``step`` column of the cell's rows).

The interval is the mean of the targets' Wilson 95% bounds. The targets see the same images, so
their rates are not independent and a pooled Wilson interval would be too narrow; the standard
deviation of a mean is at most the mean of the standard deviations, so the mean of the bounds is
at least as wide as the interval of the mean (equal when the targets agree on every image).

``compute.png`` plots it: one panel per surrogate (the surrogate sets the level, so panels are
never pooled), one line per attack through its rows' mean over seeds, the band between the
interval's bounds, log x axis, and the Pareto front (no other point of the panel transfers at
least as well for at most the same cost, and better in one) circled.

``--budget B`` keeps, for each attack and surrogate, the row with the best black-box mean ASR
among those that spent at most B evaluations per image: "at 400 gradients per image, which method
transfers best?" in one command (``budget_B.md`` and ``budget_B.csv``).
"""
from __future__ import annotations

from typing import List

import pandas as pd

from flatbench.measures.landscape import png

# What a line is: the attack from one surrogate at one threat model (seeds are averaged; the cost
# knob, steps or n_samples, and the budget are what moves along the line).
LINE = ["surrogate", "attack", "eps", "norm", "targeted"]
COLUMNS = ["cell_id", *LINE, "seed", "budget", "step", "steps", "n_images", "grad_evals_per_image", "asr",
           "asr_ci_low", "asr_ci_high", "n_targets"]


def compute_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, step), from the merged rows (see the module docstring)."""
    d = df[df["role"] != "white-box"].copy()
    if d.empty:
        raise ValueError("the compute axis needs black-box targets (every target here is the surrogate)")
    if "step" not in d.columns:
        d["step"] = d["steps"]
    d["step"] = d["step"].fillna(d["steps"])
    if "budget" not in d.columns:
        d["budget"] = float("nan")
    keys = ["cell_id", "step"]
    g = d.groupby(keys, sort=False)
    out = g.agg(**{c: (c, "first") for c in LINE + ["seed", "budget", "steps", "n_images", "grad_evals"]},
                asr=("asr", "mean"), asr_ci_low=("asr_ci_low", "mean"), asr_ci_high=("asr_ci_high", "mean"),
                n_targets=("target", "nunique")).reset_index()
    out["grad_evals_per_image"] = out["grad_evals"] / out["n_images"]
    out["step"] = out["step"].astype(int)
    return out[COLUMNS].sort_values(["surrogate", "attack", "grad_evals_per_image", "seed"], kind="stable",
                                    ignore_index=True)


def _lines(table: pd.DataFrame) -> pd.DataFrame:
    """Each line's points: the mean over seeds at each cost (and the number of seeds behind it)."""
    keys = LINE + ["grad_evals_per_image"]
    return (table.groupby(keys, sort=False)
            .agg(asr=("asr", "mean"), asr_ci_low=("asr_ci_low", "mean"), asr_ci_high=("asr_ci_high", "mean"),
                 n_cells=("cell_id", "nunique"), step=("step", "first"))
            .reset_index().sort_values(keys, ignore_index=True))


def pareto(points: pd.DataFrame) -> pd.Series:
    """True where no other point has cost <= and ASR >= with one of them strict."""
    c, a = points["grad_evals_per_image"].to_numpy(), points["asr"].to_numpy()
    front = [not any((c[j] <= c[i] and a[j] >= a[i]) and (c[j] < c[i] or a[j] > a[i]) for j in range(len(c)))
             for i in range(len(c))]
    return pd.Series(front, index=points.index)


def compute_png(table: pd.DataFrame) -> bytes:
    return png(compute_figure(table))


def compute_figure(table: pd.DataFrame):
    """Black-box mean ASR against gradient evaluations per image, one panel per (surrogate, eps, norm,
    goal), one line per attack: its interval as a band where the line has several points and as an
    error bar where it has one; plain-number ticks; the legend beside the data, not over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    pts = _lines(table)
    panels = list(pts.groupby([c for c in LINE if c != "attack"], sort=True))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 1.8, 4.6), squeeze=False)
    for ax, (key, p) in zip(axes[0], panels):
        front = pareto(p)
        for attack, q in p.groupby("attack", sort=True):
            x, y = q["grad_evals_per_image"].to_numpy(), q["asr"].to_numpy()
            lo, hi = q["asr_ci_low"].to_numpy(), q["asr_ci_high"].to_numpy()
            line, = ax.plot(x, y, marker="o", ms=4, label=attack)
            if len(q) > 1:
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.08, lw=0)
            else:   # one point: a band would have no width, so it would not be drawn at all
                ax.errorbar(x, y, yerr=[y - lo, hi - y], color=line.get_color(), capsize=3, lw=1)
        f = p[front]
        ax.scatter(f["grad_evals_per_image"], f["asr"], s=110, facecolors="none", edgecolors="black", lw=1.4,
                   label="Pareto front", zorder=5)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("gradient evaluations per image (log scale)")
        ax.set_ylabel("black-box mean ASR, %")
        ax.set_title(f"surrogate {key[0]}, eps {key[1]:g}/255 {key[2]}{', targeted' if key[3] else ''}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.suptitle("shaded, or error bars for a single point: the mean of the black-box targets' Wilson 95% bounds; "
                 "circled: the Pareto front", fontsize=9)
    fig.tight_layout()
    return fig


def best_within(table: pd.DataFrame, budget: float) -> pd.DataFrame:
    """Each line's best point within ``budget`` evaluations per image (means over seeds)."""
    pts = _lines(table)
    within = pts[pts["grad_evals_per_image"] <= budget]
    if within.empty:
        raise ValueError(f"--budget {budget:g}: no cell spent that little (the cheapest spent "
                         f"{pts['grad_evals_per_image'].min():g} gradient evaluations per image)")
    best = within.loc[within.groupby(LINE, sort=False)["asr"].idxmax()]
    return best.sort_values(["surrogate", "asr"], ascending=[True, False], ignore_index=True)


def budget_markdown(best: pd.DataFrame, budget: float) -> str:
    lines = [f"Each attack's best black-box mean ASR within {budget:g} gradient evaluations per image "
             "(compute.csv; the mean over its cells, seeds included).", "",
             "| surrogate | attack | asr | 95% CI (mean of Wilson bounds) | grad evals per image | step | cells |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in best.itertuples(index=False):
        lines.append(f"| {r.surrogate} | {r.attack} | {r.asr:.1f} | [{r.asr_ci_low:.1f}, {r.asr_ci_high:.1f}] | "
                     f"{r.grad_evals_per_image:g} | {int(r.step)} | {r.n_cells} |")
    lines += ["", "Rows of one surrogate are ordered by ASR; entries whose intervals overlap may show no "
              "detectable difference (`--versus ATTACK` tests each pair of cells on the same images)."]
    return "\n".join(lines) + "\n"


def attacks_missing(best: pd.DataFrame, table: pd.DataFrame) -> List[str]:
    """Lines with no point within the budget (named under the table, not silently dropped)."""
    have = set(map(tuple, best[LINE].astype(str).to_numpy()))
    return sorted({" / ".join(k) for k in map(tuple, table[LINE].astype(str).to_numpy()) if k not in have})
