"""The transfer table: rows are attack settings (never two cells merged), columns are targets,
with the white-box mark and the black-box mean; markdown, LaTeX, and ASR with Wilson intervals."""
from __future__ import annotations

from typing import List, Optional

import pandas as pd

from flatbench.cell.columns import setting_columns
from flatbench.report.cells import _cell, _text


ROW_KEYS = ["surrogate", "attack", "eps"]


# Settings shown whenever they vary (they say what a method ran with); any other setting is
# added only where it still tells two cells of one row apart.
VARYING_CANDIDATES = ["dataset", "norm", "targeted", "steps", "alpha", "beta", "r", "zeta", "n_samples",
                      "decay", "transforms", "seed", "n_images"]


BLACK_BOX_MEAN = "black-box mean"


def _key_strings(df: pd.DataFrame, keys: List[str]) -> pd.DataFrame:
    return df[keys].map(_text) if keys else pd.DataFrame(index=df.index)


def _n_groups(df: pd.DataFrame, keys: List[str], codes: Optional[dict] = None) -> int:
    """Distinct combinations of ``keys`` (as the table writes them); ``codes`` caches each
    column's factorised text, so a study of thousands of cells is not re-stringified per test."""
    if not keys:
        return 1
    if codes is None:
        return len(_key_strings(df, keys).drop_duplicates())
    for k in keys:
        if k not in codes:
            codes[k] = pd.factorize(df[k].map(_text))[0]
    return len(pd.DataFrame({k: codes[k] for k in keys}).drop_duplicates())


def row_keys(df: pd.DataFrame, rows: Optional[List[str]] = None) -> List[str]:
    """Row labels under which no two cells that differ in a setting are ever merged.

    By default: surrogate, attack, eps, the usual settings that vary (β, r, ...), then any other
    setting that still splits a row, in column order. With ``rows`` given, a setting that
    varies inside one row is an error naming it.
    """
    settings = setting_columns(df.columns)
    codes: dict = {}
    if rows:
        unknown = [r for r in rows if r not in df.columns]
        if unknown:
            raise ValueError(f"--rows: unknown column(s) {unknown}")
        keys = list(rows)
        split = [c for c in settings if c not in keys and _n_groups(df, keys + [c], codes) > _n_groups(df, keys, codes)]
        if split:
            c = split[0]
            raise ValueError(f"--rows {' '.join(rows)}: cells that differ in {c!r} "
                             f"({', '.join(sorted(df[c].map(_text).unique()))}) would be averaged into one row; "
                             f"add {c} to --rows or --filter it")
        return keys
    keys = [k for k in ROW_KEYS if k in df.columns]
    keys += [c for c in VARYING_CANDIDATES if c in df.columns and _n_groups(df, [c], codes) > 1]
    for c in settings:
        if c not in keys and _n_groups(df, keys + [c], codes) > _n_groups(df, keys, codes):
            keys.append(c)
    return keys


def _one_cell_per_entry(df: pd.DataFrame, keys: List[str]) -> None:
    """Refuse a table entry made of two cells (same settings in every column, yet another cell id)."""
    n = df.assign(_k=_key_strings(df, keys).agg("|".join, axis=1)).groupby(["_k", "target"])["cell_id"].nunique()
    if (n > 1).any():
        raise ValueError(f"cells {', '.join(sorted(set(df['cell_id'])))[:200]} share every setting column but not "
                         f"their cell id (results of another flatbench version?); --filter on cell_id or version")


def label(v) -> str:
    """A setting as a table row shows it: "-" where a method lacks it (beta for I-FGSM)."""
    return "-" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v))


def entries(df: pd.DataFrame, pairs, rows: Optional[List[str]] = None) -> set:
    """The (row label, target) entries of :func:`pivot`'s table for (cell_id, target) pairs."""
    keys = row_keys(df, rows)
    first = df.drop_duplicates("cell_id").set_index("cell_id")
    return {(tuple(label(first.loc[c, k]) for k in keys), t) for c, t in pairs if c in first.index}


def pivot(df: pd.DataFrame, value: str = "asr", rows: Optional[List[str]] = None) -> tuple:
    """(values, white-box mask) with attack settings as rows and targets as columns."""
    keys = row_keys(df, rows)
    _one_cell_per_entry(df, keys)
    d = df.copy()
    for k in keys:
        # Settings a method does not have (beta for I-FGSM) are NaN; show them as "-" and keep the row.
        d[k] = d[k].map(label)
    targets = list(dict.fromkeys(d["target"]))
    table = d.pivot_table(index=keys, columns="target", values=value, aggfunc="mean", sort=False)[targets]
    white = d.assign(w=d["role"].eq("white-box")).pivot_table(index=keys, columns="target", values="w", aggfunc="max", sort=False)[targets]
    black = d[d["role"] != "white-box"].groupby(keys, sort=False)[value].mean()
    table[BLACK_BOX_MEAN] = black.reindex(table.index)
    white[BLACK_BOX_MEAN] = False
    return table, white.fillna(False).astype(bool)


# Values that are not percentages: their unit and the decimals that show their differences.
UNITS = {"ssim_mean": ("SSIM, 1 = unchanged", 3), "psnr_mean": ("dB", 2), "linf_mean": ("1/255", 2),
         "l2_mean": ("1/255", 2), "grad_evals": ("image passes", 0)}


def _fmt(v, w: bool, decimals: int = 1) -> str:
    return "" if pd.isna(v) else f"{v:.{decimals}f}" + ("*" if w else "")


def baseline(versus: str) -> str:
    """Whose ASR a † entry differs from: ``MI-FGSM's``, or with ``--versus surrogate=NAME`` the same
    attack's from NAME."""
    return f"the same attack's from {versus.split('=', 1)[1]}" if versus.startswith("surrogate=") else f"{versus}'s"


def to_markdown(table: pd.DataFrame, white: pd.DataFrame, value: str, marked: Optional[set] = None,
                versus: str = "") -> str:
    """The table; ``marked`` entries ((row label, target), from :func:`entries`) get a † for a
    difference from ``versus`` at Holm-adjusted p < 0.05."""
    marked = marked or set()
    unit, decimals = UNITS.get(value, ("%", 1))
    keys = list(table.index.names)
    head = keys + list(table.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(keys) + ["---:"] * len(table.columns)) + "|"]
    # Positional rows (white aligned to the table once): .loc per cell is slow at thousands of rows.
    for idx, vals, marks in zip(table.index, table.to_numpy(), white.reindex_like(table).to_numpy()):
        idx = idx if isinstance(idx, tuple) else (idx,)
        cells = [str(i) for i in idx] + [_fmt(v, bool(w), decimals) + ("†" if (idx, t) in marked else "")
                                         for v, w, t in zip(vals, marks, table.columns)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Values: {value} ({unit}). * marks white-box cells (target = surrogate); "
                 f"'{BLACK_BOX_MEAN}' averages the other targets.")
    if versus:
        lines.append(f"† marks an entry whose ASR differs from {baseline(versus)} on the same images (over every seed of "
                     "its setting) at Holm-adjusted p < 0.05 (significance.csv); an unmarked entry shows no "
                     "detectable difference, and significance.md says how large a difference its test could have seen.")
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, white: pd.DataFrame) -> str:
    def esc(s):
        return str(s).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

    keys = list(table.index.names)
    cols = list(table.columns)
    out = [r"\begin{tabular}{" + "l" * len(keys) + "r" * len(cols) + "}", r"\toprule",
           " & ".join(esc(c) for c in keys + cols) + r" \\", r"\midrule"]
    for idx, row, marks in zip(table.index, table.to_numpy(), white.reindex_like(table).to_numpy()):
        idx = idx if isinstance(idx, tuple) else (idx,)
        vals = []
        for v, w in zip(row, marks):
            vals.append("" if pd.isna(v) else (rf"\textit{{{v:.1f}}}" if w else f"{v:.1f}"))
        out.append(" & ".join([esc(i) for i in idx] + vals) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", "% white-box cells in italics"]
    return "\n".join(out) + "\n"


def ci_markdown(df: pd.DataFrame, rows: Optional[List[str]] = None) -> str:
    """ASR with its Wilson 95% interval, one line per (row settings, target)."""
    keys = row_keys(df, rows)
    lines = ["| " + " | ".join(keys + ["target", "asr", "95% CI", "n"]) + " |",
             "|" + "|".join(["---"] * (len(keys) + 1) + ["---:"] * 3) + "|"]
    for r in df.itertuples(index=False):
        d = r._asdict()
        lines.append("| " + " | ".join([_cell(d.get(k)) for k in keys] + [str(d["target"]), f"{d['asr']:.1f}",
                     f"[{d['asr_ci_low']:.1f}, {d['asr_ci_high']:.1f}]", str(d["n_images"])]) + " |")
    return "\n".join(lines) + "\n"
