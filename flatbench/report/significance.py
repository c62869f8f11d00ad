"""Every attack against one baseline (``--versus ATTACK``): one family of tests, the claims a reader
makes from the tables, each with the smallest difference it could have seen.

- **Rows.** Cells pair as ``--mcnemar`` pairs them (every setting equal but the attack's own). One
  row per (attack, surrogate, target, setting) over all seeds: the discordant images of the seeds are
  summed, a seed whose pair of adversarial sets repeats an earlier seed's (the same 8-bit pixels, by
  the cells' ``adv_digest``: a deterministic attack against a deterministic baseline) counting
  once; then McNemar's exact p. Per (attack, surrogate, setting), a row with target
  ``black-box mean``: the paired difference of the black-box mean ASR, per image the share of the
  black-box targets fooled (averaged over the counted seeds), with a paired bootstrap interval over
  images and the exact sign-flip test.
- **The family.** Black-box rows and black-box means. White-box rows are shown, judged at 0.05 alone,
  and are out of it. Holm's adjustment runs over the family (``p_holm``); ``--fdr`` adds Benjamini
  and Hochberg's (``p_bh``).
- **What could have been seen.** ``mde``: the smallest difference in points that the row's test would
  detect with 80% power at the row's ``level`` (0.05 over the family's size, the level Holm's first
  step uses, for every family row), given its n and discordance (:mod:`flatbench.report.paired`).
- **As good as.** ``--margin M`` adds ``p_equiv``, two one-sided tests of |difference| < M points,
  and its Holm adjustment ``p_equiv_holm`` over the family.
"""
from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
import pandas as pd

from flatbench.cell.columns import attack_columns
from flatbench.measures.statistics import holm, mcnemar
from flatbench.report.cells import _cell, _text
from flatbench.report.paired import (benjamini_hochberg, bootstrap_mean_ci, mcnemar_mde, mcnemar_se, mean_mde, sign_flip_p,
                     tost_p)
from flatbench.report.mcnemar import mcnemar_table

ALPHA = 0.05
MARK = "†"
BLACK_BOX_MEAN = "black-box mean"
COLUMNS = ["attack", "attack_settings", "versus", "surrogate", "eps", "budget", "target", "family", "seeds", "seeds_counted", "n", "asr", "asr_versus",
           "only_attack", "only_versus", "diff", "diff_ci_low", "diff_ci_high", "test", "p", "level", "p_holm", "p_bh",
           "mde", "margin", "p_equiv", "p_equiv_holm", "verdict", "cell_ids", "versus_cell_ids"]
_PER_PAIR = {"target", "attack_a", "attack_b", "cell_a", "cell_b", "n", "asr_a", "asr_b", "only_a", "only_b",
             "p_exact", "chi2", "p_chi2"}


# The replicates a row pools: the seeds, under --over instance the testbed's instances, and with
# --versus surrogate=NAME a surrogate's runs (an LGV set's collection runs, an architecture's instances).
_POOLED = ("run", "instance", "seed")
SURROGATE = "surrogate="


def _replicates(pairs: pd.DataFrame, pooled: list) -> str:
    """The pooled replicates of a row as text: seeds ('0 1 2'), or instance/seed ('1/0 2/0 3/0')."""
    if not pooled:
        return ""
    return " ".join("/".join(str(v) for v in r) for r in pairs[pooled].itertuples(index=False))


def _signatures(flags: pd.DataFrame, df: pd.DataFrame) -> dict:
    """cell id -> what identifies its adversarial set: the digest of its pixels (``adv_digest``), or for a
    cell recorded without one, a digest of its predictions on every target and image."""
    out = {}
    if "adv_digest" in df.columns:
        known = df.dropna(subset=["adv_digest"]).drop_duplicates("cell_id")
        out = dict(zip(known["cell_id"], known["adv_digest"]))
    f = flags[~flags["cell_id"].isin(out)].sort_values(["cell_id", "target", "image_id"])
    for cid, g in f.groupby("cell_id", sort=False):
        text = "\n".join(f"{t},{i},{p}" for t, i, p in zip(g["target"], g["image_id"], g["adv_pred"]))
        out[cid] = hashlib.sha1(text.encode()).hexdigest()
    return out


def _counted(pairs: pd.DataFrame, sig: dict) -> pd.DataFrame:
    """The pairs (one per seed) whose two adversarial sets do not repeat an earlier seed's pair."""
    key = [(sig.get(a), sig.get(b)) for a, b in zip(pairs["cell_a"], pairs["cell_b"])]
    return pairs[~pd.Series(key, index=pairs.index).duplicated()]


def _target_row(g: pd.DataFrame, white: bool) -> dict:
    only_a, only_b, n = int(g["only_a"].sum()), int(g["only_b"].sum()), int(g["n"].sum())
    asr_a = float((g["asr_a"] * g["n"]).sum() / n)
    asr_b = float((g["asr_b"] * g["n"]).sum() / n)
    return {"n": n, "asr": asr_a, "asr_versus": asr_b, "only_attack": only_a, "only_versus": only_b,
            "diff": asr_a - asr_b, "p": mcnemar(only_a, only_b)["p_exact"], "test": "McNemar exact",
            "family": not white, "_discordant": only_a + only_b, "_se": mcnemar_se(only_a, only_b, n)}


def _mean_row(pairs: pd.DataFrame, flags: pd.DataFrame, black: list) -> dict:
    """The black-box mean row: per image, the black-box targets fooled by the attack minus by the
    baseline, summed over the counted seeds (an integer, for the exact sign-flip test)."""
    fb = flags[flags["target"].isin(black)]
    per_image, fooled_a, fooled_b = None, 0.0, 0.0
    for ca, cb in zip(pairs["cell_a"], pairs["cell_b"]):
        m = fb[fb["cell_id"] == ca].merge(fb[fb["cell_id"] == cb], on=["target", "image_id"], suffixes=("_a", "_b"))
        counts = m.groupby("image_id")[["fooled_a", "fooled_b"]].sum()
        fooled_a, fooled_b = fooled_a + counts["fooled_a"].mean(), fooled_b + counts["fooled_b"].mean()
        v = (counts["fooled_a"] - counts["fooled_b"]).astype(int)
        per_image = v if per_image is None else per_image.add(v, fill_value=0).astype(int)
    unit = len(black) * len(pairs)
    d = per_image.to_numpy() / unit
    lo, hi = bootstrap_mean_ci(d)
    return {"n": len(d), "asr": 100 * fooled_a / unit, "asr_versus": 100 * fooled_b / unit,
            "diff": 100 * float(d.mean()), "diff_ci_low": 100 * lo, "diff_ci_high": 100 * hi,
            "p": sign_flip_p(per_image.to_numpy()), "test": "sign-flip permutation, exact", "family": True,
            "_d": d, "_se": float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")}


def _own_settings(df: pd.DataFrame, attack: str) -> dict:
    """cell id -> the attack's own settings that differ among its cells ('zeta=1.5'), so that two
    settings of one attack are two rows (pooling them would treat one as a seed of the other)."""
    cells = df[df["attack"] == attack].drop_duplicates("cell_id").set_index("cell_id")
    own = [c for c in attack_columns(df.columns) if c != "attack" and cells[c].map(_text).nunique() > 1]
    return {cid: " ".join(f"{c}={_cell(cells.at[cid, c])}" for c in own) for cid in cells.index}


def run_of(name: str):
    """(the surrogate a row names, its run): an LGV set's collection runs are one surrogate, as are a testbed
    architecture's instances; any other name is its own, run 1."""
    from flatbench.models.lgv_digits import PINNED_NAME, RUNS, lgv_run
    from flatbench.models.testbed import instance_of

    return (PINNED_NAME, lgv_run(name)) if name in RUNS else instance_of(name)


def _rows_of(t: pd.DataFrame, df: pd.DataFrame, flags: pd.DataFrame, sig: dict, factor: str = "attack") -> list:
    """The rows of one attack (``factor="surrogate"``: one surrogate) against the baseline, from its
    per-seed McNemar table."""
    roles = df.drop_duplicates(["cell_id", "target"]).set_index(["cell_id", "target"])["role"]
    budget = df.drop_duplicates("cell_id").set_index("cell_id")["budget"] if "budget" in df.columns else None
    if budget is not None:   # budget=B pairs by the budget; it is not among mcnemar_table's columns
        t = t.assign(budget=t["cell_a"].map(budget))
    own = {}
    for a in t["attack_a" if factor == "attack" else "attack"].unique():
        own.update(_own_settings(df, a))
    t = t.assign(attack_settings=t["cell_a"].map(own))
    if factor == "surrogate":
        runs = [run_of(s) for s in t["attack_a"]]
        t = t.assign(surrogate=[s for s, _ in runs], run=[k for _, k in runs])
    keys = [c for c in t.columns if c not in _PER_PAIR and c not in _POOLED]
    t = t.assign(_g=[tuple(_text(v) for v in r) for r in t[keys].itertuples(index=False)])
    out = []
    for _, g in t.groupby("_g", sort=False):
        pairs = g.drop_duplicates(["cell_a", "cell_b"])
        pooled = [c for c in _POOLED if c in pairs.columns]
        pairs = pairs.sort_values(pooled, kind="stable") if pooled else pairs
        counted = _counted(pairs, sig)
        first = pairs.iloc[0]
        common = {"attack": first["attack_a" if factor == "attack" else "attack"],
                  "attack_settings": first["attack_settings"],
                  "versus": first["attack_b"] if factor == "attack" else SURROGATE + first["attack_b"],
                  "surrogate": first["surrogate"],
                  **({"eps": first["eps"]} if "eps" in pairs.columns else {}),
                  "seeds": _replicates(pairs, pooled), "seeds_counted": _replicates(counted, pooled),
                  "cell_ids": " ".join(pairs["cell_a"]), "versus_cell_ids": " ".join(pairs["cell_b"]),
                  **({"budget": budget.get(first["cell_a"])} if budget is not None else {})}
        use = g[g["cell_a"].isin(counted["cell_a"]) & g["cell_b"].isin(counted["cell_b"])]
        black = []
        for target, gt in use.groupby("target", sort=False):
            white = roles.get((first["cell_a"], target)) == "white-box"
            black += [] if white else [target]
            out.append({**common, "target": target, **_target_row(gt, white)})
        if black:
            out.append({**common, "target": BLACK_BOX_MEAN, **_mean_row(counted, flags, black)})
    return out


def _judge(out: pd.DataFrame, margin: Optional[float], fdr: bool) -> pd.DataFrame:
    """Adjust over the family, and give each row its level, mde and (with a margin) equivalence test."""
    fam = out["family"].to_numpy(dtype=bool)
    m = int(fam.sum())
    out["level"] = np.where(fam, ALPHA / max(m, 1), ALPHA)
    out["p_holm"] = np.nan
    out.loc[fam, "p_holm"] = holm(out.loc[fam, "p"])
    if fdr:
        out["p_bh"] = np.nan
        out.loc[fam, "p_bh"] = benjamini_hochberg(out.loc[fam, "p"])
    out["mde"] = [100 * (mean_mde(r["_d"], r["level"]) if r["target"] == BLACK_BOX_MEAN
                         else mcnemar_mde(r["n"], r["_discordant"], r["level"])) for _, r in out.iterrows()]
    if margin is not None:
        out["margin"] = margin
        out["p_equiv"] = [tost_p(r["diff"] / 100, r["_se"], margin / 100) for _, r in out.iterrows()]
        out["p_equiv_holm"] = np.nan
        out.loc[fam, "p_equiv_holm"] = holm(out.loc[fam, "p_equiv"])
    out["verdict"] = [verdict(r) for _, r in out.iterrows()]
    return out[[c for c in COLUMNS if c in out.columns]]


def verdict(r) -> str:
    """What a row lets a reader say."""
    p = r["p_holm"] if r["family"] else r["p"]
    if p < ALPHA:
        return "higher" if r["diff"] > 0 else "lower"
    p_equiv = r.get("p_equiv_holm" if r["family"] else "p_equiv", np.nan)
    if p_equiv < ALPHA:
        return f"as good as (within ±{r['margin']:g})"
    seen = "no difference could be seen" if pd.isna(r["mde"]) else f"could have seen ±{r['mde']:.1f}"
    return f"no detectable difference ({seen})"


def significance_table(df: pd.DataFrame, flags: pd.DataFrame, versus: str, margin: Optional[float] = None,
                       fdr: bool = False) -> pd.DataFrame:
    """The family of tests of every attack against ``versus`` (module docstring); ``versus`` written
    ``surrogate=NAME``: of every other surrogate against NAME, each attack on its own."""
    factor, base = ("surrogate", versus[len(SURROGATE):]) if versus.startswith(SURROGATE) else ("attack", versus)
    present = list(dict.fromkeys(df[factor]))
    if base not in present:
        raise ValueError(f"--versus {versus}: no cells of {factor} {base!r}; {factor}s: {', '.join(sorted(present))}")
    if margin is not None and not margin > 0:
        raise ValueError(f"--margin: expected a positive number of points, got {margin}")
    sig = _signatures(flags, df)
    tables = {}   # one table per row-maker: an attack, or a surrogate with all its runs
    for a in present:
        try:
            t = mcnemar_table(df, flags, a, base, factor) if a != base else None
        except ValueError:  # one with no cell paired to the baseline's (another eps, say)
            continue
        if t is not None:
            tables.setdefault(a if factor == "attack" else run_of(a)[0], []).append(t)
    rows = [r for ts in tables.values() for r in _rows_of(pd.concat(ts, ignore_index=True), df, flags, sig, factor)]
    if not rows:
        raise ValueError(f"--versus {versus}: no other {factor} has a cell paired with {base!r} "
                         f"(the same images and every setting but the {factor}'s own)")
    out = pd.DataFrame(rows)
    for c in ("diff_ci_low", "diff_ci_high", "only_attack", "only_versus"):
        out[c] = out.get(c, np.nan)
    return _judge(out, margin, fdr)


def significance_marks(sig: pd.DataFrame) -> set:
    """(cell_id, target) of the entries that differ from the baseline at Holm-adjusted p < 0.05, for
    every seed's cell of a row."""
    hit = sig[sig["family"] & (sig["p_holm"] < ALPHA)]
    return {(c, r.target) for r in hit.itertuples() for c in r.cell_ids.split()}


def _num(v, fmt: str = ".1f") -> str:
    return "" if pd.isna(v) else format(v, fmt)


def _md_rows(rows: pd.DataFrame, shown: list, versus: str) -> list:
    lines = ["| attack | surrogate | " + " | ".join(shown) + (" | " if shown else "")
             + "target | seeds | n | ASR | ASR " + versus + " | diff | p (Holm) | mde | verdict |",
             "|---|---|" + "---:|" * len(shown) + "---|---|---:|---:|---:|---:|---:|---:|---|"]
    for _, r in rows.iterrows():
        setting = "".join(f"{_num(r[c], 'g')} | " for c in shown)
        ci = "" if pd.isna(r.get("diff_ci_low")) else f" [{r['diff_ci_low']:.1f}, {r['diff_ci_high']:.1f}]"
        p = _num(r["p_holm"], ".3g") if r["family"] else _num(r["p"], ".3g") + " (white-box, alone)"
        attack = r["attack"] + (f" ({r['attack_settings']})" if isinstance(r.get("attack_settings"), str)
                                and r["attack_settings"] else "")
        lines.append(f"| {attack} | {r['surrogate']} | {setting}{r['target']} | {r['seeds_counted']} | {r['n']} | "
                     f"{r['asr']:.1f} | {r['asr_versus']:.1f} | {r['diff']:+.1f}{ci} | {p} | {_num(r['mde'])} | "
                     f"{r['verdict']} |")
    return lines


def significance_markdown(sig: pd.DataFrame) -> str:
    """significance.md: three tables a page can quote (``<!-- from .../significance.md table N -->``):
    1. the differences that survive Holm's adjustment; 2. every black-box mean, with what it could
    have seen; 3. every row (the family, then the white-box rows)."""
    versus = sig["versus"].iloc[0]
    what = "surrogate" if versus.startswith(SURROGATE) else "attack"
    versus = versus[len(SURROGATE):] if what == "surrogate" else versus
    fam = sig[sig["family"]]
    shown = [c for c in ("eps", "budget") if c in sig.columns and sig[c].notna().any()]
    hits = fam[fam["p_holm"] < ALPHA]
    lines = [f"# Every {what} against {versus}" + (", each attack on its own" if what == "surrogate" else ""), "",
             f"{len(fam)} tests in the family (black-box targets and the black-box mean, over all seeds); "
             f"Holm's adjustment over them; each row judged at 0.05, its mde at level 0.05/{len(fam)}: the "
             "smallest difference in points its test would detect with 80% power.", "",
             f"## 1. Differences that survive ({len(hits)} of {len(fam)})", ""]
    lines += _md_rows(hits, shown, versus) if len(hits) else ["(none)"]
    lines += ["", "## 2. The black-box means", ""]
    lines += _md_rows(fam[fam["target"] == BLACK_BOX_MEAN], shown, versus)
    lines += ["", "## 3. Every row", ""]
    lines += _md_rows(pd.concat([fam, sig[~sig["family"]]]), shown, versus)
    lines += ["", "seeds: the seeds counted, as instance/seed when the rows pool the testbed's instances, run/seed when "
              "they pool a surrogate's runs (an LGV set's collection runs) (a seed "
              "whose pair of adversarial sets repeats an earlier one's counts once); n: image pairs summed over them (the black-box mean: images). The black-box mean's diff has "
              "a paired bootstrap 95% interval over images and the exact sign-flip test; the targets, McNemar's "
              "exact test. docs/statistics.md gives the formulas."]
    return "\n".join(lines) + "\n"
