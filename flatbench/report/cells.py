"""The rows a report reads: the cells under the given directories (a results.csv beside a
cell.json), their per-image flags, and --filter."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import pandas as pd

from ..columns import order_columns


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
    frames = [current_names(pd.read_csv(c / "results.csv")) for c in _cells_of(dirs)]
    if not frames:
        raise FileNotFoundError(f"no cell results (results.csv beside cell.json) under {', '.join(map(str, dirs))}")
    df = pd.concat(frames, ignore_index=True)
    return order_columns(df.drop_duplicates(subset=["cell_id", "target"], keep="last"))


def current_names(df: pd.DataFrame) -> pd.DataFrame:
    """A flatbench 0.1 cell's rows under 0.2's column names, in memory (the file is not touched).

    0.1 called the estimator `penalty` (columns penalty, penalty.*) and the plain gradient
    `none`; the settings are the same, so old and new cells of one setting share a table row.
    """
    if "penalty" not in df.columns or "estimator" in df.columns:
        return df
    df = df.rename(columns={c: "estimator" + c[len("penalty"):] for c in df.columns
                            if c == "penalty" or c.startswith("penalty.")})
    df["estimator"] = df["estimator"].replace({"none": "plain"})
    return df


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
