"""``flatbench-report``: merge the cells of one or more sweeps into tables and a heatmap.

    flatbench-report outputs/sweeps/digits/2026-11-21_10-00-00
    flatbench-report SWEEP_A SWEEP_B --out merged --value asr_clean_correct --filter eps=32

Writes ``results.csv`` (all rows), ``table.md`` and ``table.tex`` (rows: attack settings;
columns: targets; white-box cells marked with *; a black-box mean column) and
``heatmap.png`` into ``--out`` (default: ``report/`` inside the first directory; a report
never writes over one of its inputs), plus ``table_ci.md``
(ASR with Wilson 95% intervals), and on request ``compare.md`` (--compare published),
``mcnemar.md`` (--mcnemar A B), ``asr_vs_<param>.png`` (--plot-param beta), ``significance.csv``
and ``.md`` (--versus ATTACK: every attack against a baseline, Holm-adjusted, with the smallest
difference each test could have seen; --margin M, --fdr; † in table.md; --versus surrogate=NAME:
every other surrogate against NAME, the same attack on the same images) and ``summary.csv``
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

from pathlib import Path
from typing import List, Optional, Sequence

from flatbench.core.io import atomic_write_bytes, atomic_write_text
from flatbench.cell.directory import CellDir
from flatbench.core.layout import SweepLayout
from flatbench.report.cells import apply_filters, collect
from flatbench.report.instances import by_instance
from flatbench.report.outputs import OUTPUTS, ReportContext
from flatbench.report.wandb_log import log_wandb, report_group

__all__ = ["build_report", "main", "collect", "report_group"]


def build_report(dirs: Sequence[Path], out: Optional[Path] = None, value: str = "asr",
                 filters: Sequence[str] = (), rows: Optional[List[str]] = None,
                 compare_with: Optional[str] = None, mcnemar_pair: Optional[Sequence[str]] = None,
                 plot_params: Sequence[str] = (), flatness_metric: Optional[str] = None,
                 landscape_pair: Optional[Sequence[str]] = None, versus: Optional[str] = None,
                 over: Optional[str] = None, budget: Optional[float] = None, margin: Optional[float] = None,
                 fdr: bool = False) -> dict:
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
    if over == "instance":   # the outputs' view: a surrogate is its architecture, its instance a column
        df = by_instance(df)
    rep = {"df": df, "paths": paths, "out": out}
    ctx = ReportContext(df=df, dirs=dirs, put=put, rep=rep, value=value, filters=filters, rows=rows, over=over,
                        versus=versus, budget=budget, plot_params=plot_params, flatness_metric=flatness_metric,
                        landscape_pair=landscape_pair, mcnemar_pair=mcnemar_pair, compare_with=compare_with,
                        margin=margin, fdr=fdr)
    for write in OUTPUTS.in_order():   # each output writes its files when its option asks for it
        write(ctx)
    return rep

def main(argv: Optional[Sequence[str]] = None) -> int:
    from flatbench.core.registry import plain

    p = argparse.ArgumentParser(prog="flatbench-report", description=plain(__doc__.split("\n\nThis module is the command")[0]),
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
                   help="every attack against this baseline, black-box targets and the black-box mean, over all seeds, "
                        "Holm-adjusted, each row with the smallest difference it could have seen (significance.csv, "
                        "significance.md); table.md marks the entries that differ with †. surrogate=NAME: every other "
                        "surrogate against NAME instead, each attack on its own (an LGV set's runs pooled per image)")
    p.add_argument("--margin", type=float, default=None, metavar="M",
                   help="with --versus: also test equivalence within M points (two one-sided tests, p_equiv)")
    p.add_argument("--fdr", action="store_true",
                   help="with --versus: add Benjamini-Hochberg adjusted p-values (p_bh) beside Holm's")
    p.add_argument("--over", default=None, metavar="COL",
                   help="summarise over a setting, usually seed: summary.csv (asr_mean, asr_sd, n_seeds) and table.md "
                        "as mean ± sd; the per-seed table goes to table_<COL>s.md. 'instance' summarises over the "
                        "testbed's independently trained instances (digits-cnn, digits-cnn-2, digits-cnn-3), each "
                        "evaluated on its own instance's zoo (targets=digits, digits_2, digits_3)")
    p.add_argument("--budget", type=float, default=None, metavar="B",
                   help="each attack's best row within B gradient evaluations per image (budget_B.md, budget_B.csv, "
                        "from compute.csv)")
    p.add_argument("--wandb", default=None, metavar="PROJECT", help="also log the tables to this W&B project")
    p.add_argument("--wandb-group", default=None, metavar="GROUP",
                   help="the W&B group of the report's run (default: the group the sweep's cells logged into)")
    args = p.parse_args(argv)
    try:
        rep = build_report(args.dirs, args.out, args.value, args.filter, args.rows, args.compare, args.mcnemar,
                           args.plot_param, args.flatness, args.landscape, args.versus, args.over, args.budget,
                           args.margin, args.fdr)
        if args.wandb:
            log_wandb(rep, args.wandb, args.wandb_group or report_group(args.dirs))
    except (FileNotFoundError, ValueError) as exc:
        print(f"flatbench-report: error: {exc}", file=sys.stderr)
        return 2
    print(rep["paths"]["table.md"].read_text())
    for extra in ("compare.md", "mcnemar.md", "significance.md", "flatness.md", *(n for n in rep["paths"] if n.startswith("budget_") and n.endswith(".md"))):
        if extra in rep["paths"]:
            print(rep["paths"][extra].read_text())
    for name, path in rep["paths"].items():
        print(f"{name:12s} {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
