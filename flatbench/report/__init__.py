"""``flatbench-report``: merge the cells of one or more sweeps into tables and a heatmap.

    flatbench-report outputs/sweeps/digits/2026-11-21_10-00-00
    flatbench-report SWEEP_A SWEEP_B --out merged --value asr_clean_correct --filter eps=32

Writes ``results.csv`` (all rows), ``table.md`` and ``table.tex`` (rows: attack settings;
columns: targets; white-box cells marked with *; a black-box mean column) and
``heatmap.png`` into ``--out`` (default: ``report/`` inside the first directory; a report
never writes over one of its inputs), plus ``table_ci.md``
(ASR with Wilson 95% intervals), and on request ``compare.md`` (--compare published),
``mcnemar.md`` (--mcnemar A B), ``asr_vs_<param>.png`` (--plot-param beta), ``significance.csv``
(--versus ATTACK: every attack against a baseline, Holm-adjusted; † in table.md) and ``summary.csv``
(--over seed: mean ± sd over seeds, which table.md then shows), ``compute.csv`` and ``compute.png``
(black-box ASR against gradient evaluations per image, the Pareto front marked) and ``budget_B.md``
(--budget B: each attack's best row within B evaluations per image).

This module is the command; each output comes from its own module: :mod:`.cells` (the rows
read, --filter), :mod:`.tables` (table.md, table.tex, table_ci.md), :mod:`.plots` (the PNGs),
:mod:`.statistics` (McNemar, Spearman), :mod:`.published` (--compare), :mod:`.flatness`
(--flatness), :mod:`.compute` (the compute axis, --budget) and :mod:`.wandb_log` (--wandb).
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd
from pathlib import Path
from typing import List, Optional, Sequence

from ..io import atomic_write_bytes, atomic_write_text
from ..cell.directory import CellDir
from ..layout import SweepLayout
from .cells import apply_filters, collect, collect_snapshots, load_flags
from .compute import attacks_missing, best_within, budget_markdown, compute_png, compute_table
from .flatness import flatness_report
from .plots import heatmap_png, landscape_compare, param_plot_png
from .published import compare, compare_markdown, load_published
from .statistics import mcnemar_markdown, mcnemar_table
from .seeds import seed_markdown, seed_summary, seed_table
from .significance import significance_marks, significance_table
from .tables import ci_markdown, entries, pivot, to_latex, to_markdown
from .wandb_log import log_wandb, report_group

__all__ = ["build_report", "main", "collect", "report_group"]


def build_report(dirs: Sequence[Path], out: Optional[Path] = None, value: str = "asr",
                 filters: Sequence[str] = (), rows: Optional[List[str]] = None,
                 compare_with: Optional[str] = None, mcnemar_pair: Optional[Sequence[str]] = None,
                 plot_params: Sequence[str] = (), flatness_metric: Optional[str] = None,
                 landscape_pair: Optional[Sequence[str]] = None, versus: Optional[str] = None,
                 over: Optional[str] = None, budget: Optional[float] = None) -> dict:
    dirs = [Path(d) for d in dirs]
    out = Path(out) if out is not None else SweepLayout.report(dirs[0])
    cells = CellDir.find(dirs, CellDir.RESULTS)
    if CellDir(out).is_cell():
        raise ValueError(f"--out {out} is a cell directory, and its files are inputs of the report; reports go to a "
                         f"directory of their own (default: {SweepLayout.report(dirs[0])})")
    inputs = {p.resolve() for c in cells for p in c.path.iterdir() if p.is_file()}
    paths = {}

    def put(name: str, data) -> None:
        path = out / name
        if path.resolve() in inputs:  # a guard at the single place reports write, whatever --out says
            raise ValueError(f"refusing to write {path}: it is an input of this report")
        write = atomic_write_bytes if isinstance(data, bytes) else atomic_write_text
        paths[name] = write(path, data)

    df = apply_filters(collect(dirs), filters)
    if value not in df.columns:
        raise ValueError(f"--value: unknown column {value!r}")
    put(CellDir.RESULTS, df.to_csv(index=False))   # the cells' rows merged, under their own file name
    rep = {"df": df, "paths": paths, "out": out}
    marked = set()
    if versus:
        sig = significance_table(df, load_flags(dirs), versus)
        put("significance.csv", sig.to_csv(index=False))
        marked = entries(df, significance_marks(sig), rows)
        rep["significance"] = sig
    _tables(df, value, rows, over, marked, versus, put, rep)
    _compute_axis(df, dirs, filters, budget, put, rep)
    for param in plot_params:
        put(f"asr_vs_{param}.png", param_plot_png(df, param, value))
    if flatness_metric:
        fl = flatness_report(df, dirs, flatness_metric, over)
        put("flatness.md", fl["md"])
        put("flatness_vs_transfer.png", fl["scatter"])
        put("flatness_by_fooled.png", fl["box"])
        put("flatness_correlation.csv", fl["correlation"].to_csv(index=False))
        put("flatness_auroc.csv", fl["auroc"].to_csv(index=False))
        rep.update(spearman=fl["rho"], flatness_correlation=fl["correlation"], flatness_auroc=fl["auroc"])
    if landscape_pair:
        put("landscape_compare.png", landscape_compare(df, dirs, *landscape_pair))
    if mcnemar_pair:
        t = mcnemar_table(df, load_flags(dirs), *mcnemar_pair)
        put("mcnemar.md", mcnemar_markdown(t))
        put("mcnemar.csv", t.to_csv(index=False))
        rep["mcnemar"] = t
    if compare_with:
        m = compare(df, load_published(compare_with), value)
        put("compare.md", compare_markdown(m))
        put("compare.csv", m.to_csv(index=False))
        rep["compare"] = m
    return rep


def _tables(df: pd.DataFrame, value: str, rows, over: Optional[str], marked, versus: Optional[str], put, rep: dict) -> None:
    """table.md (over seeds: mean ± sd, the per-seed table in table_seeds.md), table.tex, heatmap.png and
    table_ci.md."""
    if over:
        summary = seed_summary(df, over)
        put("summary.csv", summary.to_csv(index=False))
        rep["summary"] = summary
        put("table.md", seed_markdown(seed_table(df, rows, over), over))
        table, white = pivot(df, value, rows)
        put(f"table_{over}s.md", to_markdown(table, white, value, marked, versus or ""))
    else:
        table, white = pivot(df, value, rows)
        put("table.md", to_markdown(table, white, value, marked, versus or ""))
    put("table.tex", to_latex(table, white))
    put("heatmap.png", heatmap_png(table, white, value))
    if "asr_ci_low" in df.columns:
        put("table_ci.md", ci_markdown(df, rows))
    rep.update(table=table, white=white)


def _compute_axis(df: pd.DataFrame, dirs, filters, budget: Optional[float], put, rep: dict) -> None:
    """compute.csv/png (ASR against gradient evaluations per image, snapshots included) and, with
    ``--budget B``, the best cell of each attack within B."""
    if not (df["role"] != "white-box").any():
        if budget is not None:
            raise ValueError("--budget: every target here is the surrogate; the compute axis needs black-box targets")
        return
    snaps = collect_snapshots(dirs)
    comp = compute_table(pd.concat([df, apply_filters(snaps, filters)], ignore_index=True) if len(snaps) else df)
    put("compute.csv", comp.to_csv(index=False))
    put("compute.png", compute_png(comp))
    rep["compute"] = comp
    if budget is not None:
        best = best_within(comp, budget)
        missing = attacks_missing(best, comp)
        put(f"budget_{budget:g}.md", budget_markdown(best, budget)
            + (f"\nNo cell within the budget: {'; '.join(missing)}.\n" if missing else ""))
        put(f"budget_{budget:g}.csv", best.to_csv(index=False))
        rep["budget"] = best


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="flatbench-report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path, help="sweep (or run) directories to merge")
    p.add_argument("--out", type=Path, default=None, help="where to write the outputs (default: DIR/report for the first DIR); never a cell directory")
    p.add_argument("--value", default="asr", help="the column to tabulate (asr, asr_clean_correct, clean_acc, ...)")
    p.add_argument("--filter", action="append", default=[], metavar="COL=VAL", help="keep rows where COL equals VAL")
    p.add_argument("--rows", nargs="+", default=None, help="row keys (default: surrogate attack eps + varying settings)")
    p.add_argument("--compare", default=None, metavar="published|CSV",
                   help="put published numbers beside ours: 'published' (conf/published/*.csv) or a CSV path")
    p.add_argument("--mcnemar", nargs=2, metavar=("ATTACK_A", "ATTACK_B"), default=None,
                   help="paired McNemar test of two attacks (labels as in the attack column) on the same images")
    p.add_argument("--plot-param", action="append", default=[], metavar="COL",
                   help="plot ASR against a swept setting (beta, zeta, n_samples, eps, ...), one line per target")
    p.add_argument("--flatness", default=None, metavar="METRIC",
                   help="flatness vs transfer: sharp_mean, sharp_max, sharp_worst, hess_top, grad_l2, ... (cells run with flatness=on)")
    p.add_argument("--landscape", nargs=2, default=None, metavar=("ATTACK_A", "ATTACK_B"),
                   help="side-by-side loss landscapes of two attacks on the same images (flatness=on)")
    p.add_argument("--versus", default=None, metavar="ATTACK",
                   help="every attack against this baseline: McNemar's exact p per paired cell and target, Holm-adjusted "
                        "(significance.csv); table.md marks the entries that differ with †")
    p.add_argument("--over", default=None, metavar="COL",
                   help="summarise over a setting, usually seed: summary.csv (asr_mean, asr_sd, n_seeds) and table.md "
                        "as mean ± sd; the per-seed table goes to table_<COL>s.md")
    p.add_argument("--budget", type=float, default=None, metavar="B",
                   help="each attack's best row within B gradient evaluations per image (budget_B.md, budget_B.csv, "
                        "from compute.csv)")
    p.add_argument("--wandb", default=None, metavar="PROJECT", help="also log the tables to this W&B project")
    p.add_argument("--wandb-group", default=None, metavar="GROUP",
                   help="the W&B group of the report's run (default: the group the sweep's cells logged into)")
    args = p.parse_args(argv)
    try:
        rep = build_report(args.dirs, args.out, args.value, args.filter, args.rows, args.compare, args.mcnemar,
                           args.plot_param, args.flatness, args.landscape, args.versus, args.over, args.budget)
        if args.wandb:
            log_wandb(rep, args.wandb, args.wandb_group or report_group(args.dirs))
    except (FileNotFoundError, ValueError) as exc:
        print(f"flatbench-report: error: {exc}", file=sys.stderr)
        return 2
    print(rep["paths"]["table.md"].read_text())
    for extra in ("compare.md", "mcnemar.md", "flatness.md", *(n for n in rep["paths"] if n.startswith("budget_") and n.endswith(".md"))):
        if extra in rep["paths"]:
            print(rep["paths"][extra].read_text())
    for name, path in rep["paths"].items():
        print(f"{name:12s} {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
