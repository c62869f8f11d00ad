"""Paired statistics over cells: McNemar's test of two attacks on the same images, and
Spearman's rank correlation (the counting formulas are in :mod:`flatbench.measures.statistics`)."""
from __future__ import annotations

import pandas as pd

from flatbench.cell.columns import attack_columns, setting_columns
from flatbench.report.cells import _text


def mcnemar_table(df: pd.DataFrame, flags: pd.DataFrame, a: str, b: str, factor: str = "attack") -> pd.DataFrame:
    """McNemar's test of attack ``a`` against ``b`` for each target, on the images both attacked.

    Cells are paired when they agree on every setting but the attack's own (the method, its
    optimizer, estimator and transform settings): surrogate, eps, steps, alpha, norm, data,
    seed, targeted, batch_size, device, ... Cells crafted at a budget (``budget=B``) pair by the
    budget instead of T and α: the budget set each attack's own cost knob (T with α = ε/T, or N),
    so at equal compute T and α belong to the attack; a cell without a budget pairs as before.

    ``factor="surrogate"``: ``a`` and ``b`` are surrogates instead, and cells pair when they agree on
    every setting but the surrogate (and its weights' revision): the same attack at the same settings.
    """
    from flatbench.measures.statistics import mcnemar

    flag = "--mcnemar" if factor == "attack" else f"--versus surrogate={b}"
    present = set(df[factor])
    for name in (a, b):
        if name not in present:
            raise ValueError(f"{flag}: no cells of {factor} {name!r}; {factor}s: {', '.join(sorted(present))}")
    own = set(attack_columns(df.columns)) if factor == "attack" else {"surrogate", "weights_revision"}
    pair_keys = [k for k in setting_columns(df.columns) if k not in own]
    budget_keys = [k for k in pair_keys if k not in ("steps", "alpha")] + ["budget"]
    has_budget = "budget" in df.columns
    cells = df.drop_duplicates(["cell_id"])[["cell_id", factor] + pair_keys + (["budget"] if has_budget else [])]
    out = []
    for _, ca in cells[cells[factor] == a].iterrows():
        match = cells[(cells[factor] == b)]
        keys = budget_keys if has_budget and not pd.isna(ca["budget"]) else pair_keys
        for k in keys:
            match = match[match[k].map(_text) == _text(ca[k])]
        for _, cb in match.iterrows():
            fa = flags[flags["cell_id"] == ca["cell_id"]]
            fb = flags[flags["cell_id"] == cb["cell_id"]]
            m = fa.merge(fb, on=["target", "image_id"], suffixes=("_a", "_b"))
            for target, g in m.groupby("target", sort=False):
                only_a = int(((g["fooled_a"] == 1) & (g["fooled_b"] == 0)).sum())
                only_b = int(((g["fooled_a"] == 0) & (g["fooled_b"] == 1)).sum())
                t = mcnemar(only_a, only_b)
                out.append({**{k: ca[k] for k in pair_keys}, "target": target, "attack_a": a, "attack_b": b,
                            "cell_a": ca["cell_id"], "cell_b": cb["cell_id"],
                            "n": len(g), "asr_a": 100 * g["fooled_a"].mean(), "asr_b": 100 * g["fooled_b"].mean(),
                            "only_a": only_a, "only_b": only_b, "p_exact": t["p_exact"], "chi2": t["chi2"],
                            "p_chi2": t["p_chi2"]})
    if not out:
        raise ValueError(f"{flag}: no pair of {a!r} and {b!r} cells on the same images and settings")
    return pd.DataFrame(out)


def mcnemar_markdown(t: pd.DataFrame) -> str:
    lines = ["| surrogate | eps | target | n | ASR A | ASR B | A only | B only | p (exact) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in t.itertuples():
        lines.append(f"| {r.surrogate} | {r.eps:g} | {r.target} | {r.n} | {r.asr_a:.1f} | {r.asr_b:.1f} | "
                     f"{r.only_a} | {r.only_b} | {r.p_exact:.3g} |")
    a, b = t["attack_a"].iloc[0], t["attack_b"].iloc[0]
    lines += ["", f"A = {a}, B = {b}. McNemar's exact test on the per-image fooled flags (two-sided)."]
    return "\n".join(lines) + "\n"


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    a, b = pd.Series(list(a), dtype=float), pd.Series(list(b), dtype=float)
    if len(a) < 3 or a.nunique() < 2 or b.nunique() < 2:
        return float("nan")
    return float(a.rank().corr(b.rank()))
