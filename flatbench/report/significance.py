"""Every attack against one baseline (``--versus ATTACK``): McNemar's exact test per paired cell and
target, Holm-adjusted over the whole file, and the table entries that differ marked.

Cells pair as ``--mcnemar`` pairs them (every setting equal but the attack's own). A difference is a
finding only when its Holm-adjusted p is below 0.05; everything else is "no detectable difference"
at this number of images, however far apart the two ASRs look.
"""
from __future__ import annotations

import pandas as pd

from ..stats import holm
from .statistics import mcnemar_table

ALPHA = 0.05
MARK = "†"


def significance_table(df: pd.DataFrame, flags: pd.DataFrame, versus: str) -> pd.DataFrame:
    """One row per (attack, paired cell, target) with the discordant counts, McNemar's exact p and
    Holm's adjustment over every row."""
    attacks = [a for a in dict.fromkeys(df["attack"]) if a != versus]
    if versus not in set(df["attack"]):
        raise ValueError(f"--versus: no cells of attack {versus!r}; attacks: {', '.join(sorted(set(df['attack'])))}")
    frames = []
    for a in attacks:
        try:
            t = mcnemar_table(df, flags, a, versus)
        except ValueError:  # an attack with no cell paired to the baseline's (another eps, say)
            continue
        frames.append(pd.DataFrame({
            "attack": a, "versus": versus, "surrogate": t["surrogate"], "target": t["target"],
            "cell_id": t["cell_a"], "versus_cell_id": t["cell_b"], "n": t["n"], "asr": t["asr_a"],
            "asr_versus": t["asr_b"], "only_attack": t["only_a"], "only_versus": t["only_b"], "p": t["p_exact"],
            # the budget both cells were crafted at (budget=B pairs cells by it, statistics.mcnemar_table)
            **({"budget": df.set_index("cell_id")["budget"].groupby(level=0).first().reindex(t["cell_a"]).to_numpy()}
               if "budget" in df.columns else {})}))
    if not frames:
        raise ValueError(f"--versus {versus}: no other attack has a cell paired with {versus!r} "
                         "(the same images and every setting but the attack's own)")
    out = pd.concat(frames, ignore_index=True)
    out["p_holm"] = holm(out["p"])
    return out


def significance_marks(sig: pd.DataFrame) -> set:
    """(cell_id, target) of the entries that differ from the baseline at Holm-adjusted p < 0.05."""
    hit = sig[sig["p_holm"] < ALPHA]
    return set(zip(hit["cell_id"], hit["target"]))
