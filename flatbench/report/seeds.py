"""Several seeds of one setting (``--over seed``): the mean and the sample standard deviation of the
ASR over seeds, per (attack settings, target), and the table as mean ± sd.

A seed changes the attack's random draws (PGN's neighbours, DIM's resizes, ...), not the images or
the models, so the spread over seeds is the part of a difference that the method's own randomness
makes; one seed cannot show it.
"""
from __future__ import annotations

from typing import List, Optional

import pandas as pd

from flatbench.cell.columns import setting_columns
from flatbench.report.cells import _text
from flatbench.report.tables import BLACK_BOX_MEAN, baseline, label, row_keys

MARK = "†"


def _over(df: pd.DataFrame, over: str) -> pd.DataFrame:
    if over not in df.columns:
        raise ValueError(f"--over: unknown column {over!r}")
    return df


def seed_summary(df: pd.DataFrame, over: str = "seed") -> pd.DataFrame:
    """One row per (every setting but ``over``, target): asr_mean, asr_sd (sample sd, ddof 1; NaN for
    one seed) and n_seeds."""
    df = _over(df, over)
    keys = [c for c in setting_columns(df.columns) if c != over] + ["target"]
    d = df.assign(**{f"_{k}": df[k].map(_text) for k in keys})
    g = d.groupby([f"_{k}" for k in keys], sort=False)
    out = g.agg(**{k: (k, "first") for k in keys}, asr_mean=("asr", "mean"), asr_sd=("asr", "std"),
                n_seeds=(over, "nunique")).reset_index(drop=True)
    return out


def seed_table(df: pd.DataFrame, rows: Optional[List[str]] = None, over: str = "seed",
               marked: frozenset = frozenset()) -> pd.DataFrame:
    """The transfer table with each entry as 'mean ± sd (n)' over ``over``; the black-box mean is
    averaged per seed first, then summarised over seeds. ``marked``: (row label, target) entries that
    differ from the --versus baseline (its rows pool the seeds, as this table does), shown with †."""
    df = _over(df, over)
    keys = row_keys(df.drop(columns=[over]), [r for r in rows if r != over] if rows else None)
    d = df.copy()
    for k in keys:
        d[k] = d[k].map(label)
    d["_w"] = d["role"].eq("white-box")
    targets = list(dict.fromkeys(d["target"]))
    per_seed = d.pivot_table(index=keys + [over], columns="target", values="asr", aggfunc="mean", sort=False)
    per_seed[BLACK_BOX_MEAN] = d[~d["_w"]].groupby(keys + [over], sort=False)["asr"].mean()
    g = per_seed.groupby(level=keys, sort=False)
    mean, sd, n = g.mean(), g.std(), g.count()
    white = d.pivot_table(index=keys, columns="target", values="_w", aggfunc="max", sort=False)
    cols = targets + [BLACK_BOX_MEAN]
    out = pd.DataFrame(index=mean.index, columns=cols, dtype=object)
    for c in cols:
        for idx in mean.index:
            m, s, k = mean.loc[idx, c], sd.loc[idx, c], n.loc[idx, c]
            w = c in white.columns and bool(white.loc[idx, c])
            mark = MARK if ((idx if isinstance(idx, tuple) else (idx,)), c) in marked else ""
            out.loc[idx, c] = "" if pd.isna(m) else (f"{m:.1f}" + ("*" if w else "") + mark
                                                     + ("" if pd.isna(s) else f" ± {s:.1f}") + f" ({k})")
    return out


def seed_markdown(table: pd.DataFrame, over: str = "seed", versus: str = "") -> str:
    keys = list(table.index.names)
    lines = ["| " + " | ".join(keys + list(table.columns)) + " |",
             "|" + "|".join(["---"] * len(keys) + ["---:"] * len(table.columns)) + "|"]
    for idx, vals in zip(table.index, table.to_numpy()):
        idx = idx if isinstance(idx, tuple) else (idx,)
        lines.append("| " + " | ".join([str(i) for i in idx] + [str(v) for v in vals]) + " |")
    lines += ["", f"Values: ASR (%), mean ± sample standard deviation over {over} (number of {over}s); "
              f"* marks white-box cells; '{BLACK_BOX_MEAN}' is averaged per {over}, then over {over}s."]
    if versus:
        lines.append(f"{MARK} marks an entry that differs from {baseline(versus)} over the same images and {over}s at "
                     "Holm-adjusted p < 0.05 (significance.csv, significance.md, with the difference each unmarked "
                     "entry could have shown).")
    return "\n".join(lines) + "\n"


def replicate_markdown(corr: pd.DataFrame, per: dict, over: str) -> str:
    """Each metric's Spearman ρ across settings in every replicate (each value of ``over``) beside the
    ρ of the settings averaged over them (``corr``, with its adjusted p): whether a relation found in one
    seed or one trained instance keeps its sign in the others. ``per``: value -> its correlation rows."""
    values = list(per)
    rows = corr[corr["surrogate"] != "all"]
    lines = [f"## Every metric's correlation in each {over}, and over the {over}s", "",
             "| surrogate | metric | " + " | ".join(f"ρ, {over} {v}" for v in values)
             + f" | same sign as the average | ρ, averaged over the {over}s | Holm p |",
             "|---|---|" + "---:|" * len(values) + "---:|---:|---:|"]
    for r in rows.itertuples():
        each = []
        for v in values:
            hit = per[v][(per[v]["surrogate"] == r.surrogate) & (per[v]["metric"] == r.metric)]["rho"]
            each.append(float(hit.iloc[0]) if len(hit) else float("nan"))
        same = sum(1 for x in each if pd.notna(x) and pd.notna(r.rho) and x * r.rho > 0)
        cells = " | ".join("" if pd.isna(x) else f"{x:+.2f}" for x in each)
        lines.append(f"| {r.surrogate} | {r.metric} | {cells} | {same} of {len(values)} | {r.rho:+.2f} | {r.p_holm:.2g} |")
    lines += ["", f"ρ: Spearman's, across the settings of a surrogate (one point per setting), in each {over} alone "
              f"and with each setting averaged over the {over}s; Holm's adjustment over the metrics × surrogates "
              f"of the averaged rows. A sign kept in every {over} is what chance gives one time in "
              f"{2 ** (len(values) - 1)} for a metric unrelated to transfer."]
    return "\n".join(lines) + "\n"
