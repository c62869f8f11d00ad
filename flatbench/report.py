"""``flatbench-report``: merge the cells of one or more sweeps into tables and a heatmap.

    flatbench-report outputs/sweeps/digits/2026-11-21_10-00-00
    flatbench-report SWEEP_A SWEEP_B --out merged --value asr_clean_correct --filter eps=32

Writes ``results.csv`` (all rows), ``table.md`` and ``table.tex`` (rows: attack settings;
columns: targets; white-box cells marked with *; a black-box mean column) and
``heatmap.png`` into ``--out`` (default: ``report/`` inside the first directory; a report
never writes over one of its inputs), plus ``table_ci.md``
(ASR with Wilson 95% intervals), and on request ``compare.md`` (--compare published),
``mcnemar.md`` (--mcnemar A B) and ``asr_vs_<param>.png`` (--plot-param beta).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import pandas as pd

from .io import atomic_write_bytes, atomic_write_text
from .record import attack_columns, order_columns, setting_columns

ROW_KEYS = ["surrogate", "attack", "eps"]
# Settings shown whenever they vary (they say what a method ran with); any other setting is
# added only where it still tells two cells of one row apart.
VARYING_CANDIDATES = ["dataset", "norm", "targeted", "steps", "alpha", "beta", "r", "zeta", "n_samples",
                      "decay", "transforms", "seed", "n_images"]
BLACK_BOX_MEAN = "black-box mean"


def _cells_of(dirs: Sequence[Path]) -> List[Path]:
    """Cell directories (a cell.json beside a results.csv) under the given directories."""
    out = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"no such sweep directory: {d}")
        out += [f.parent for f in sorted(d.rglob("results.csv")) if (f.parent / "cell.json").exists()]
    return list(dict.fromkeys(out))


def collect(dirs: Sequence[Path]) -> pd.DataFrame:
    """All cell rows under the given directories (each cell writes one results.csv)."""
    # A cell's results.csv sits beside its cell.json; a report's does not.
    frames = [pd.read_csv(c / "results.csv") for c in _cells_of(dirs)]
    if not frames:
        raise FileNotFoundError(f"no cell results (results.csv beside cell.json) under {', '.join(map(str, dirs))}")
    df = pd.concat(frames, ignore_index=True)
    return order_columns(df.drop_duplicates(subset=["cell_id", "target"], keep="last"))


TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _parse(col: str, series: pd.Series, val: str):
    """A filter value in the column's own type: booleans from true/false/1/0, numbers from text."""
    if pd.api.types.is_bool_dtype(series) or set(series.dropna().map(str)) <= {"True", "False"} and len(series.dropna()):
        low = val.strip().lower()
        if low not in TRUE + FALSE:
            raise ValueError(f"--filter {col}={val}: {col} is true/false (also 1/0)")
        return low in TRUE
    if pd.api.types.is_numeric_dtype(series):
        try:
            return float(val)
        except ValueError:
            raise ValueError(f"--filter {col}={val}: {col} holds numbers") from None
    return val


def apply_filters(df: pd.DataFrame, filters: Sequence[str]) -> pd.DataFrame:
    for f in filters:
        if "=" not in f:
            raise ValueError(f"--filter expects COLUMN=VALUE, got {f!r}")
        col, val = f.split("=", 1)
        if col not in df.columns:
            raise ValueError(f"--filter: unknown column {col!r}; columns: {', '.join(df.columns)}")
        want = _parse(col, df[col], val)
        if isinstance(want, bool):
            keep = df[col].map(_text).str.lower().isin(TRUE if want else FALSE)
        elif isinstance(want, float):
            keep = pd.to_numeric(df[col], errors="coerce") == want
        else:
            keep = df[col].map(_text) == want
        if not keep.any():
            values = ", ".join(map(_cell, sorted(df[col].dropna().unique(), key=str))) or "(none)"
            raise ValueError(f"--filter {col}={val} matches no row; {col} takes: {values}")
        df = df[keep]
    return df


def _text(v) -> str:
    """A value as the text that tells settings apart; missing is "-" (pandas 3's astype(str) keeps NaN)."""
    return "-" if pd.isna(v) else str(v)


def _key_strings(df: pd.DataFrame, keys: List[str]) -> pd.DataFrame:
    return df[keys].map(_text) if keys else pd.DataFrame(index=df.index)


def _n_groups(df: pd.DataFrame, keys: List[str]) -> int:
    return len(_key_strings(df, keys).drop_duplicates()) if keys else 1


def row_keys(df: pd.DataFrame, rows: Optional[List[str]] = None) -> List[str]:
    """Row labels under which no two cells that differ in a setting are ever merged.

    By default: surrogate, attack, eps, the usual settings that vary (β, r, ...), then any other
    setting that still splits a row, in column order. With ``rows`` given, a setting that
    varies inside one row is an error naming it.
    """
    settings = setting_columns(df.columns)
    if rows:
        unknown = [r for r in rows if r not in df.columns]
        if unknown:
            raise ValueError(f"--rows: unknown column(s) {unknown}")
        keys = list(rows)
        split = [c for c in settings if c not in keys and _n_groups(df, keys + [c]) > _n_groups(df, keys)]
        if split:
            c = split[0]
            raise ValueError(f"--rows {' '.join(rows)}: cells that differ in {c!r} "
                             f"({', '.join(sorted(df[c].map(_text).unique()))}) would be averaged into one row; "
                             f"add {c} to --rows or --filter it")
        return keys
    keys = [k for k in ROW_KEYS if k in df.columns]
    keys += [c for c in VARYING_CANDIDATES if c in df.columns and _n_groups(df, [c]) > 1]
    for c in settings:
        if c not in keys and _n_groups(df, keys + [c]) > _n_groups(df, keys):
            keys.append(c)
    return keys


def _one_cell_per_entry(df: pd.DataFrame, keys: List[str]) -> None:
    """Refuse a table entry made of two cells (same settings in every column, yet another cell id)."""
    n = df.assign(_k=_key_strings(df, keys).agg("|".join, axis=1)).groupby(["_k", "target"])["cell_id"].nunique()
    if (n > 1).any():
        raise ValueError(f"cells {', '.join(sorted(set(df['cell_id'])))[:200]} share every setting column but not "
                         f"their cell id (results of another flatbench version?); --filter on cell_id or version")


def pivot(df: pd.DataFrame, value: str = "asr", rows: Optional[List[str]] = None) -> tuple:
    """(values, white-box mask) with attack settings as rows and targets as columns."""
    keys = row_keys(df, rows)
    _one_cell_per_entry(df, keys)
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


PUBLISHED_DIR = Path(__file__).resolve().parent / "conf" / "published"
MATCH_KEYS = ["surrogate", "attack", "eps", "target"]


def load_published(source: str) -> pd.DataFrame:
    """Published numbers: ``published`` (every CSV under conf/published/) or a CSV path."""
    files = sorted(PUBLISHED_DIR.glob("*.csv")) if source == "published" else [Path(source)]
    missing = [f for f in files if not f.is_file()]
    if not files or missing:
        raise FileNotFoundError(f"--compare: no published-numbers file {missing[0] if missing else PUBLISHED_DIR}")
    pub = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    need = set(MATCH_KEYS) | {"asr", "source"}
    if not need <= set(pub.columns):
        raise ValueError(f"--compare: published files need columns {sorted(need)}; found {list(pub.columns)}")
    return pub


def compare(df: pd.DataFrame, pub: pd.DataFrame, value: str = "asr") -> pd.DataFrame:
    """Ours beside the published number for every (surrogate, attack, eps, target) both have.

    The attack label names the method variant (``GNP`` is the paper's form, ``GNP-TA``
    TransferAttack's port), so a published number is only ever set beside the variant that
    produced it. One line per matching cell: cells are never averaged.
    """
    ours = df[MATCH_KEYS + [value, "cell_id"]].rename(columns={value: "ours"})
    pub = pub.rename(columns={"asr": "published"})
    if "note" not in pub.columns:
        pub["note"] = ""
    ours["eps"], pub["eps"] = ours["eps"].astype(float), pub["eps"].astype(float)
    m = ours.merge(pub[MATCH_KEYS + ["published", "source", "note"]], on=MATCH_KEYS, how="inner")
    m["note"] = m["note"].fillna("")
    m["diff"] = m["ours"] - m["published"]
    return m


def compare_markdown(m: pd.DataFrame) -> str:
    if m.empty:
        return "No cell matches a published number (matched on surrogate, attack, eps, target).\n"
    lines = ["| surrogate | attack | eps | target | ours | published | diff | cell | note |",
             "|---|---|---:|---|---:|---:|---:|---|---|"]
    for r in m.itertuples():
        lines.append(f"| {r.surrogate} | {r.attack} | {r.eps:g} | {r.target} | {r.ours:.1f} | {r.published:.1f} | "
                     f"{r.diff:+.1f} | {r.cell_id} | {r.note} |")
    lines += ["", "Sources: " + "; ".join(sorted(set(m["source"].astype(str))))]
    return "\n".join(lines) + "\n"


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


def _cell(v) -> str:
    return "-" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v))


def load_flags(dirs: Sequence[Path]) -> pd.DataFrame:
    """Per-image fooled flags of every cell (predictions.csv beside cell.json)."""
    frames = []
    for d in dirs:
        for f in sorted(Path(d).rglob("predictions.csv")):
            if (f.parent / "cell.json").exists():
                frames.append(pd.read_csv(f, usecols=["cell_id", "target", "image_id", "fooled"]))
    if not frames:
        raise FileNotFoundError("no per-image flags (predictions.csv with a 'fooled' column) found")
    return pd.concat(frames).drop_duplicates(["cell_id", "target", "image_id"], keep="last")


def mcnemar_table(df: pd.DataFrame, flags: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """McNemar's test of attack ``a`` against ``b`` for each target, on the images both attacked.

    Cells are paired when they agree on every setting but the attack's own (the method, its
    optimizer, penalty and transform settings): surrogate, eps, steps, alpha, norm, data,
    seed, targeted, batch_size, device, ...
    """
    from .stats import mcnemar

    attacks = set(df["attack"])
    for name in (a, b):
        if name not in attacks:
            raise ValueError(f"--mcnemar: no cells of attack {name!r}; attacks: {', '.join(sorted(attacks))}")
    own = set(attack_columns(df.columns))
    pair_keys = [k for k in setting_columns(df.columns) if k not in own]
    cells = df.drop_duplicates(["cell_id"])[["cell_id", "attack"] + pair_keys]
    out = []
    for _, ca in cells[cells["attack"] == a].iterrows():
        match = cells[(cells["attack"] == b)]
        for k in pair_keys:
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
        raise ValueError(f"--mcnemar: no pair of {a!r} and {b!r} cells on the same images and settings")
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


def param_plot_png(df: pd.DataFrame, param: str, value: str = "asr") -> bytes:
    """ASR against a swept parameter, one line per target (with Wilson 95% bands), per attack panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if param not in df.columns:
        raise ValueError(f"--plot-param: unknown column {param!r}")
    d = df[df[param].notna()].copy()
    if d[param].nunique() < 2:
        raise ValueError(f"--plot-param: {param!r} takes fewer than 2 values in these cells")
    # One panel per combination of the other settings that vary, so no point averages two cells.
    panel_keys = [k for k in row_keys(d) if k != param]
    if d.assign(_p=_key_strings(d, panel_keys).agg("|".join, axis=1)).duplicated(["_p", "target", param]).any():
        raise ValueError(f"--plot-param {param}: cells that differ only along {param} and settings tied to it "
                         "cannot be told apart; --filter the others")
    groups = [g for g in d.groupby(_key_strings(d, panel_keys).agg(" | ".join, axis=1), sort=False)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4), squeeze=False)
    for ax, (title, g) in zip(axes[0], groups):
        for target, t in g.groupby("target", sort=False):
            t = t[[param, value, "asr_ci_low", "asr_ci_high"]].sort_values(param)
            ax.plot(t[param], t[value], marker="o", label=target)
            if value == "asr":
                ax.fill_between(t[param], t["asr_ci_low"], t["asr_ci_high"], alpha=0.15)
        ax.set_xlabel(param)
        ax.set_ylabel(f"{value} (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    a, b = pd.Series(list(a), dtype=float), pd.Series(list(b), dtype=float)
    if len(a) < 3 or a.nunique() < 2 or b.nunique() < 2:
        return float("nan")
    return float(a.rank().corr(b.rank()))


def flatness_report(df: pd.DataFrame, dirs: Sequence[Path], metric: str) -> tuple:
    """(markdown, per-cell scatter PNG, per-image fooled/not PNG) for one flatness metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col = f"flat_{metric}_median"
    if col not in df.columns:
        raise ValueError(f"--flatness: no column {col!r}; run the cells with flatness=on "
                         f"(metrics: loss, grad_l1, grad_l2, sharp_mean, sharp_max, sharp_worst, hess_top)")
    bb = df[df["role"] != "white-box"]
    cells = bb.groupby("cell_id").agg(asr=("asr", "mean"), flat=(col, "first"), attack=("attack", "first"),
                                      surrogate=("surrogate", "first")).dropna()
    rho_cells = spearman(cells["flat"], cells["asr"])
    frames = []
    for d in dirs:
        for f in sorted(Path(d).rglob("flatness.csv")):
            if (f.parent / "cell.json").exists() and (f.parent / "predictions.csv").exists():
                fl = pd.read_csv(f)
                fl = fl[fl["at"] == "adv"][["image_id", metric]]
                pr = pd.read_csv(f.parent / "predictions.csv")
                cid = pr["cell_id"].iloc[0]
                roles = df[df["cell_id"] == cid].set_index("target")["role"]
                pr = pr[pr["target"].map(roles).ne("white-box")]
                frames.append(pr.merge(fl, on="image_id"))
    per = pd.concat(frames) if frames else pd.DataFrame(columns=["fooled", metric])
    fooled, kept = per[per["fooled"] == 1][metric], per[per["fooled"] == 0][metric]
    lines = [f"## Flatness ({metric}, median per cell) against transfer (black-box mean ASR)", "",
             f"Spearman rho over {len(cells)} cells: {rho_cells:.3f}", "",
             "| surrogate | attack | " + metric + " (median) | black-box mean ASR |", "|---|---|---:|---:|"]
    for r in cells.sort_values("flat").itertuples():
        lines.append(f"| {r.surrogate} | {r.attack} | {r.flat:.4g} | {r.asr:.1f} |")
    lines += ["", f"Per image and black-box target: median {metric} of examples that fooled the target "
              f"{fooled.median():.4g} (n={len(fooled)}), that did not {kept.median():.4g} (n={len(kept)})."]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for att, g in cells.groupby("attack"):
        ax.scatter(g["flat"], g["asr"], label=att, s=40)
    ax.set_xlabel(f"{metric} at x_adv (median over images)")
    ax.set_ylabel("black-box mean ASR (%)")
    ax.set_title(f"Flatness vs transfer, Spearman rho = {rho_cells:.2f} ({len(cells)} cells)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    b1 = io.BytesIO()
    fig.savefig(b1, format="png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.boxplot([kept.dropna().to_numpy(), fooled.dropna().to_numpy()], showfliers=False)
    ax.set_xticks([1, 2], labels=[f"not fooled (n={len(kept)})", f"fooled (n={len(fooled)})"])
    ax.set_ylabel(f"{metric} at x_adv")
    ax.set_title("Per image, black-box targets", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    b2 = io.BytesIO()
    fig.savefig(b2, format="png", dpi=110)
    plt.close(fig)
    return "\n".join(lines) + "\n", b1.getvalue(), b2.getvalue(), rho_cells


def landscape_compare(df: pd.DataFrame, dirs: Sequence[Path], a: str, b: str) -> bytes:
    """Side-by-side landscapes of attacks a and b on the same images (cells paired as for McNemar)."""
    from .flatness import landscape_png

    frames = {}
    for name in (a, b):
        ids = set(df[df["attack"] == name]["cell_id"])
        for d in dirs:
            for f in sorted(Path(d).rglob("landscape.csv")):
                meta = f.parent / "cell.json"
                if meta.exists() and json.loads(meta.read_text()).get("cell_id") in ids and name not in frames:
                    frames[name] = pd.read_csv(f)
        if name not in frames:
            raise ValueError(f"--landscape: no landscape.csv for attack {name!r} (run it with flatness=on)")
    images = [i for i in dict.fromkeys(frames[a]["image_id"]) if i in set(frames[b]["image_id"])]
    if not images:
        raise ValueError("--landscape: the two attacks' landscapes share no image")
    return landscape_png(frames, images, title=f"{a} vs {b}: loss around x_adv")


def report_group(dirs: Sequence[Path]) -> Optional[str]:
    """The W&B group of the sweep the report reads: the group its cells logged into (their
    logger.group, else <name>-<sweep dir name>); None when the cells are not one sweep's."""
    from omegaconf import OmegaConf

    from .record import sweep_group

    groups = set()
    for d in dirs:
        for hydra_yaml in sorted(Path(d).rglob(".hydra/hydra.yaml")):
            cell = hydra_yaml.parent.parent
            hc = OmegaConf.load(hydra_yaml).hydra
            if hc.get("mode") != "MULTIRUN":
                groups.add(None)
                continue
            sweep_dir = OmegaConf.to_container(hc.sweep)["dir"]  # as the cells saw it (unresolved: the parent)
            sweep_dir = sweep_dir if "${" not in str(sweep_dir) else str(cell.parent)
            cfg = OmegaConf.load(cell / ".hydra" / "config.yaml")
            groups.add(cfg.get("logger", {}).get("group") or sweep_group(cfg.get("name", "default"), sweep_dir))
    return groups.pop() if len(groups) == 1 else None


def log_wandb(rep: dict, project: str, group: Optional[str] = None) -> None:
    """Mirror the report's tables to W&B (offline unless WANDB_MODE says otherwise), into the
    sweep's group (see :func:`report_group`)."""
    import os

    import wandb

    run = wandb.init(project=project, job_type="report", mode=os.environ.get("WANDB_MODE", "offline"),
                     dir=str(rep["out"]), group=group, name=f"report-{group}" if group else None,
                     reinit="finish_previous")
    try:
        clean = lambda d: d.astype(object).where(d.notna(), None)  # noqa: E731
        run.log({"report/results": wandb.Table(dataframe=clean(rep["df"]))})
        run.log({"report/table": wandb.Table(dataframe=clean(rep["table"].reset_index()))})
        for name in ("compare", "mcnemar"):
            if name in rep:
                run.log({f"report/{name}": wandb.Table(dataframe=clean(rep[name]))})
        for name, path in rep["paths"].items():
            if name.endswith(".png"):
                run.log({f"report/{name[:-4]}": wandb.Image(str(path))})
    finally:
        run.finish()


def build_report(dirs: Sequence[Path], out: Optional[Path] = None, value: str = "asr",
                 filters: Sequence[str] = (), rows: Optional[List[str]] = None,
                 compare_with: Optional[str] = None, mcnemar_pair: Optional[Sequence[str]] = None,
                 plot_params: Sequence[str] = (), flatness_metric: Optional[str] = None,
                 landscape_pair: Optional[Sequence[str]] = None) -> dict:
    dirs = [Path(d) for d in dirs]
    out = Path(out) if out is not None else dirs[0] / "report"
    cells = _cells_of(dirs)
    if (out / "cell.json").exists():
        raise ValueError(f"--out {out} is a cell directory, and its files are inputs of the report; reports go to a "
                         f"directory of their own (default: {dirs[0] / 'report'})")
    inputs = {p.resolve() for c in cells for p in c.iterdir() if p.is_file()}
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
    table, white = pivot(df, value, rows)
    put("results.csv", df.to_csv(index=False))
    put("table.md", to_markdown(table, white, value))
    put("table.tex", to_latex(table, white))
    put("heatmap.png", heatmap_png(table, white, value))
    if "asr_ci_low" in df.columns:
        put("table_ci.md", ci_markdown(df, rows))
    rep = {"df": df, "table": table, "white": white, "paths": paths, "out": out}
    for param in plot_params:
        put(f"asr_vs_{param}.png", param_plot_png(df, param, value))
    if flatness_metric:
        md, scatter, box, rho = flatness_report(df, dirs, flatness_metric)
        put("flatness.md", md)
        put("flatness_vs_transfer.png", scatter)
        put("flatness_by_fooled.png", box)
        rep["spearman"] = rho
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
    p.add_argument("--wandb", default=None, metavar="PROJECT", help="also log the tables to this W&B project")
    p.add_argument("--wandb-group", default=None, metavar="GROUP",
                   help="the W&B group of the report's run (default: the group the sweep's cells logged into)")
    args = p.parse_args(argv)
    try:
        rep = build_report(args.dirs, args.out, args.value, args.filter, args.rows, args.compare, args.mcnemar,
                           args.plot_param, args.flatness, args.landscape)
        if args.wandb:
            log_wandb(rep, args.wandb, args.wandb_group or report_group(args.dirs))
    except (FileNotFoundError, ValueError) as exc:
        print(f"flatbench-report: error: {exc}", file=sys.stderr)
        return 2
    print(rep["paths"]["table.md"].read_text())
    for extra in ("compare.md", "mcnemar.md", "flatness.md"):
        if extra in rep["paths"]:
            print(rep["paths"][extra].read_text())
    for name, path in rep["paths"].items():
        print(f"{name:12s} {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
