"""Spearman's ρ within each surrogate (and pooled, labelled ``all``) for the flatness tables the
README quotes from studies run before ``flatness_correlation.csv`` existed: the same function the
report uses (flatbench.report.flatness.flatness_correlation), applied to the README's own medians.

    .venv/bin/python scripts/within_surrogate.py            # both README tables
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from flatbench.report.flatness import flatness_correlation

ROOT = Path(__file__).resolve().parents[1]
TABLES = {  # the README table's header line, by study
    "digits flatness (10 cells)": "| surrogate | attack | black-box mean ASR | loss | sharp_mean |",
    "flat-maxima family (16 cells)": "| surrogate | attack | black-box mean ASR | loss | ‖∇ℓ‖₂ |",
}
STEMS = {"‖∇ℓ‖₂": "grad_l2", "λ_max": "hess_top"}


def readme_table(header: str) -> pd.DataFrame:
    text = (ROOT / "docs" / "flatness.md").read_text() + (ROOT / "docs" / "studies.md").read_text()
    lines = []
    for line in text[text.index(header):].splitlines():
        if not line.startswith("|"):
            break
        if not line.startswith("|---") and not line.startswith("| Spearman") and not line.startswith("| pooled"):
            lines.append(line)
    head = [STEMS.get(c.strip(), c.strip()) for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]
    df = pd.DataFrame(rows, columns=head).rename(columns={"black-box mean ASR": "asr"})
    for c in df.columns[2:]:
        df[c] = df[c].astype(float)
    return df


def main() -> int:
    for study, header in TABLES.items():
        cells = readme_table(header)
        metrics = [c for c in cells.columns if c not in ("surrogate", "attack", "asr")]
        corr = flatness_correlation(cells, metrics)
        print(f"## {study}\n")
        print(corr.round({"rho": 2, "ci_low": 2, "ci_high": 2, "p": 3}).to_csv(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
