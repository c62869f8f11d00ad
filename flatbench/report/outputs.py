"""The report's outputs, one registry entry each: what ``flatbench-report`` writes, in this order.

Every output is a function of the :class:`ReportContext` (the merged rows, the options, ``put`` to
write a file into the report directory, ``rep`` for what ``build_report`` returns) that writes its
files when its option asks for them. A new output is one function registered here (or with
``OUTPUTS.register`` from anywhere, before the report runs) and its option in ``report/__init__.py``'s
argument parser; nothing else changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import pandas as pd

from flatbench.core.registry import Registry
from flatbench.report.cells import apply_filters, collect_snapshots, load_flags
from flatbench.report.compute import attacks_missing, best_within, budget_markdown, compute_png, compute_table
from flatbench.report.flatness_tables import flatness_report
from flatbench.report.plots import heatmap_png, landscape_compare, param_plot_png
from flatbench.report.published import compare, compare_markdown, load_published
from flatbench.report.seeds import seed_markdown, seed_summary, seed_table
from flatbench.report.significance import significance_markdown, significance_marks, significance_table
from flatbench.report.mcnemar import mcnemar_markdown, mcnemar_table
from flatbench.report.tables import ci_markdown, entries, pivot, to_latex, to_markdown

OUTPUTS = Registry("report output")


@dataclass
class ReportContext:
    """What an output reads, and ``put(name, data)`` to write one file of the report."""

    df: pd.DataFrame
    dirs: List[Path]
    put: Callable[[str, Any], None]
    rep: Dict[str, Any]
    value: str = "asr"
    filters: Sequence[str] = ()
    rows: Optional[List[str]] = None
    over: Optional[str] = None
    versus: Optional[str] = None
    budget: Optional[float] = None
    plot_params: Sequence[str] = ()
    flatness_metric: Optional[str] = None
    landscape_pair: Optional[Sequence[str]] = None
    mcnemar_pair: Optional[Sequence[str]] = None
    compare_with: Optional[str] = None
    margin: Optional[float] = None             # --margin M: equivalence within M points (with --versus)
    fdr: bool = False                          # --fdr: Benjamini-Hochberg beside Holm (with --versus)
    marks: set = field(default_factory=set)    # (cell_id, target) that differ from --versus
    marked: set = field(default_factory=set)   # table entries that differ from --versus (the significance output)


@OUTPUTS.register("significance")
def write_significance(ctx: ReportContext) -> None:
    """significance.csv and .md: the family of tests against --versus (Holm-adjusted, each with its mde);
    marks the tables' entries."""
    for flag, given in (("--margin", ctx.margin is not None), ("--fdr", ctx.fdr)):
        if given and not ctx.versus:
            raise ValueError(f"{flag} needs --versus: it adjusts the tests of each attack against the baseline")
    if ctx.versus:
        sig = significance_table(ctx.df, load_flags(ctx.dirs), ctx.versus, ctx.margin, ctx.fdr)
        ctx.put("significance.csv", sig.to_csv(index=False))
        ctx.put("significance.md", significance_markdown(sig))
        ctx.marks = significance_marks(sig)
        ctx.marked = entries(ctx.df, ctx.marks, ctx.rows)
        ctx.rep["significance"] = sig


@OUTPUTS.register("tables")
def write_tables(ctx: ReportContext) -> None:
    """table.md (with --over: mean ± sd over seeds, the per-seed table in table_seeds.md), table.tex,
    heatmap.png and table_ci.md."""
    df, value, rows, over, put = ctx.df, ctx.value, ctx.rows, ctx.over, ctx.put
    if over:
        summary = seed_summary(df, over)
        put("summary.csv", summary.to_csv(index=False))
        ctx.rep["summary"] = summary
        pooled = entries(df.drop(columns=[over]), ctx.marks, [r for r in rows if r != over] if rows else None)
        put("table.md", seed_markdown(seed_table(df, rows, over, pooled), over, ctx.versus or ""))
        table, white = pivot(df, value, rows)
        put(f"table_{over}s.md", to_markdown(table, white, value, ctx.marked, ctx.versus or ""))
    else:
        table, white = pivot(df, value, rows)
        put("table.md", to_markdown(table, white, value, ctx.marked, ctx.versus or ""))
    put("table.tex", to_latex(table, white))
    put("heatmap.png", heatmap_png(table, white, value))
    if "asr_ci_low" in df.columns:
        put("table_ci.md", ci_markdown(df, rows))
    ctx.rep.update(table=table, white=white)


@OUTPUTS.register("compute")
def write_compute(ctx: ReportContext) -> None:
    """compute.csv/png (ASR against gradient evaluations per image, snapshots included) and, with
    --budget B, each attack's best cell within B."""
    df, budget, put = ctx.df, ctx.budget, ctx.put
    if not (df["role"] != "white-box").any():
        if budget is not None:
            raise ValueError("--budget: every target here is the surrogate; the compute axis needs black-box targets")
        return
    snaps = collect_snapshots(ctx.dirs)
    comp = compute_table(pd.concat([df, apply_filters(snaps, ctx.filters)], ignore_index=True) if len(snaps) else df)
    put("compute.csv", comp.to_csv(index=False))
    put("compute.png", compute_png(comp))
    ctx.rep["compute"] = comp
    if budget is not None:
        best = best_within(comp, budget)
        missing = attacks_missing(best, comp)
        put(f"budget_{budget:g}.md", budget_markdown(best, budget)
            + (f"\nNo cell within the budget: {'; '.join(missing)}.\n" if missing else ""))
        put(f"budget_{budget:g}.csv", best.to_csv(index=False))
        ctx.rep["budget"] = best


@OUTPUTS.register("param_plots")
def write_param_plots(ctx: ReportContext) -> None:
    """asr_vs_PARAM.png for each --plot-param."""
    for param in ctx.plot_params:
        ctx.put(f"asr_vs_{param}.png", param_plot_png(ctx.df, param, ctx.value))


@OUTPUTS.register("flatness")
def write_flatness(ctx: ReportContext) -> None:
    """flatness.md, its plots and CSVs for --flatness METRIC (within-surrogate correlations, per-image AUROCs,
    per-image partial correlations given the loss)."""
    if ctx.flatness_metric:
        fl = flatness_report(ctx.df, ctx.dirs, ctx.flatness_metric, ctx.over)
        ctx.put("flatness.md", fl["md"])
        ctx.put("flatness_vs_transfer.png", fl["scatter"])
        ctx.put("flatness_by_fooled.png", fl["box"])
        ctx.put("flatness_correlation.csv", fl["correlation"].to_csv(index=False))
        ctx.put("flatness_auroc.csv", fl["auroc"].to_csv(index=False))
        ctx.put("flatness_partial.csv", fl["partial"].to_csv(index=False))
        ctx.rep.update(spearman=fl["rho"], flatness_correlation=fl["correlation"], flatness_auroc=fl["auroc"],
                       flatness_partial=fl["partial"])


@OUTPUTS.register("landscape")
def write_landscape(ctx: ReportContext) -> None:
    """landscape_compare.png for --landscape A B."""
    if ctx.landscape_pair:
        ctx.put("landscape_compare.png", landscape_compare(ctx.df, ctx.dirs, *ctx.landscape_pair))


@OUTPUTS.register("mcnemar")
def write_mcnemar(ctx: ReportContext) -> None:
    """mcnemar.md/csv for --mcnemar A B."""
    if ctx.mcnemar_pair:
        t = mcnemar_table(ctx.df, load_flags(ctx.dirs), *ctx.mcnemar_pair)
        ctx.put("mcnemar.md", mcnemar_markdown(t))
        ctx.put("mcnemar.csv", t.to_csv(index=False))
        ctx.rep["mcnemar"] = t


@OUTPUTS.register("compare")
def write_compare(ctx: ReportContext) -> None:
    """compare.md/csv: our numbers beside the published ones (--compare)."""
    if ctx.compare_with:
        m = compare(ctx.df, load_published(ctx.compare_with), ctx.value)
        ctx.put("compare.md", compare_markdown(m))
        ctx.put("compare.csv", m.to_csv(index=False))
        ctx.rep["compare"] = m
