"""Our numbers beside the published ones (conf/published/*.csv), matched on surrogate, attack
label (the method variant), eps and target; never averaged."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


PUBLISHED_DIR = Path(__file__).resolve().parent.parent / "conf" / "published"


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
