"""``flatbench-report``: merge the cells of one or more sweeps into tables and a heatmap.

    flatbench-report outputs/sweeps/digits/2026-11-21_10-00-00
    flatbench-report SWEEP_A SWEEP_B --out merged --value asr_clean_correct --filter eps=32

Writes ``results.csv`` (all rows), ``table.md`` and ``table.tex`` (rows: attack settings;
columns: targets; white-box cells marked with *; a black-box mean column) and
``heatmap.png`` into ``--out`` (default: the first sweep directory).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import pandas as pd

from .io import atomic_write_bytes, atomic_write_text
from .record import order_columns

ROW_KEYS = ["surrogate", "attack", "eps"]
# Settings that, when they vary across a sweep, are shown as extra row keys.
VARYING_CANDIDATES = ["dataset", "norm", "targeted", "steps", "alpha", "beta", "r", "zeta", "n_samples",
                      "decay", "transforms", "seed", "n_images"]
BLACK_BOX_MEAN = "black-box mean"


def collect(dirs: Sequence[Path]) -> pd.DataFrame:
    """All cell rows under the given directories (each cell writes one results.csv)."""
    frames = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"no such sweep directory: {d}")
        for f in sorted(d.rglob("results.csv")):
            # A cell's results.csv sits beside its cell.json; a merged report's does not.
            if (f.parent / "cell.json").exists():
                frames.append(pd.read_csv(f))
    if not frames:
        raise FileNotFoundError(f"no cell results (results.csv beside cell.json) under {', '.join(map(str, dirs))}")
    df = pd.concat(frames, ignore_index=True)
    return order_columns(df.drop_duplicates(subset=["cell_id", "target"], keep="last"))


def apply_filters(df: pd.DataFrame, filters: Sequence[str]) -> pd.DataFrame:
    for f in filters:
        if "=" not in f:
            raise ValueError(f"--filter expects COLUMN=VALUE, got {f!r}")
        col, val = f.split("=", 1)
        if col not in df.columns:
            raise ValueError(f"--filter: unknown column {col!r}; columns: {', '.join(df.columns)}")
        df = df[df[col].astype(str) == val] if df[col].dtype == object else df[df[col] == type(df[col].iloc[0])(val)]
    if df.empty:
        raise ValueError("the filters leave no rows")
    return df


def row_keys(df: pd.DataFrame, rows: Optional[List[str]] = None) -> List[str]:
    if rows:
        return rows
    keys = list(ROW_KEYS)
    for c in VARYING_CANDIDATES:
        if c in df.columns and df[c].astype(str).nunique() > 1:
            keys.append(c)
    return keys


def pivot(df: pd.DataFrame, value: str = "asr", rows: Optional[List[str]] = None) -> tuple:
    """(values, white-box mask) with attack settings as rows and targets as columns."""
    keys = row_keys(df, rows)
    d = df.copy()
    for k in keys:
        # Settings a method does not have (beta for I-FGSM) are NaN; show them as "-" and keep the row.
        d[k] = d[k].map(lambda v: "-" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v)))
    targets = list(dict.fromkeys(d["target"]))
    table = d.pivot_table(index=keys, columns="target", values=value, aggfunc="mean", sort=False)[targets]
    white = d.assign(w=d["role"].eq("white-box")).pivot_table(index=keys, columns="target", values="w", aggfunc="max", sort=False)[targets]
    black = d[d["role"] != "white-box"].groupby(keys, sort=False)[value].mean()
    table[BLACK_BOX_MEAN] = black.reindex(table.index)
    white[BLACK_BOX_MEAN] = False
    return table, white.fillna(False).astype(bool)


def _fmt(v, w: bool) -> str:
    return "" if pd.isna(v) else f"{v:.1f}" + ("*" if w else "")


def to_markdown(table: pd.DataFrame, white: pd.DataFrame, value: str) -> str:
    keys = list(table.index.names)
    head = keys + list(table.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(keys) + ["---:"] * len(table.columns)) + "|"]
    for idx, row in table.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        cells = [str(i) for i in idx] + [_fmt(row[c], white.loc[idx if len(idx) > 1 else idx[0], c]) for c in table.columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Values: {value} (%). * marks white-box cells (target = surrogate); "
                 f"'{BLACK_BOX_MEAN}' averages the other targets.")
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, white: pd.DataFrame) -> str:
    def esc(s):
        return str(s).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

    keys = list(table.index.names)
    cols = list(table.columns)
    out = [r"\begin{tabular}{" + "l" * len(keys) + "r" * len(cols) + "}", r"\toprule",
           " & ".join(esc(c) for c in keys + cols) + r" \\", r"\midrule"]
    for idx, row in table.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        vals = []
        for c in cols:
            v, w = row[c], white.loc[idx if len(idx) > 1 else idx[0], c]
            vals.append("" if pd.isna(v) else (rf"\textit{{{v:.1f}}}" if w else f"{v:.1f}"))
        out.append(" & ".join([esc(i) for i in idx] + vals) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", "% white-box cells in italics"]
    return "\n".join(out) + "\n"


def heatmap_png(table: pd.DataFrame, white: pd.DataFrame, value: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    labels = [" | ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in table.index]
    fig, ax = plt.subplots(figsize=(1.1 * len(table.columns) + 3.5, 0.45 * len(table) + 1.8))
    im = ax.imshow(table.values.astype(float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(table.columns)), labels=list(table.columns), rotation=35, ha="right")
    ax.set_yticks(range(len(table)), labels=labels)
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            v = table.values[i, j]
            if not pd.isna(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="white" if v < 60 else "black", fontsize=8)
            if white.values[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    fig.colorbar(im, ax=ax, label=f"{value} (%)")
    ax.set_title("Transfer success rate (red box: white-box)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def build_report(dirs: Sequence[Path], out: Optional[Path] = None, value: str = "asr",
                 filters: Sequence[str] = (), rows: Optional[List[str]] = None) -> dict:
    dirs = [Path(d) for d in dirs]
    out = Path(out) if out is not None else dirs[0]
    df = apply_filters(collect(dirs), filters)
    if value not in df.columns:
        raise ValueError(f"--value: unknown column {value!r}")
    table, white = pivot(df, value, rows)
    paths = {
        "results.csv": atomic_write_text(out / "results.csv", df.to_csv(index=False)),
        "table.md": atomic_write_text(out / "table.md", to_markdown(table, white, value)),
        "table.tex": atomic_write_text(out / "table.tex", to_latex(table, white)),
        "heatmap.png": atomic_write_bytes(out / "heatmap.png", heatmap_png(table, white, value)),
    }
    return {"df": df, "table": table, "white": white, "paths": paths}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="flatbench-report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path, help="sweep (or run) directories to merge")
    p.add_argument("--out", type=Path, default=None, help="where to write the outputs (default: the first dir)")
    p.add_argument("--value", default="asr", help="the column to tabulate (asr, asr_clean_correct, clean_acc, ...)")
    p.add_argument("--filter", action="append", default=[], metavar="COL=VAL", help="keep rows where COL equals VAL")
    p.add_argument("--rows", nargs="+", default=None, help="row keys (default: surrogate attack eps + varying settings)")
    args = p.parse_args(argv)
    try:
        rep = build_report(args.dirs, args.out, args.value, args.filter, args.rows)
    except (FileNotFoundError, ValueError) as exc:
        print(f"flatbench-report: error: {exc}", file=sys.stderr)
        return 2
    print(rep["paths"]["table.md"].read_text())
    for name, path in rep["paths"].items():
        print(f"{name:12s} {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
