"""The rows a report reads: the cells under the given directories (a results.csv beside a
cell.json), their per-image flags, and --filter."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List, Sequence

import pandas as pd

from flatbench.cell.directory import CellDir
from flatbench.cell.columns import order_columns
from flatbench.core.migration import current_columns


def read_csvs(paths: Sequence[Path], **kw) -> List[pd.DataFrame]:
    """Many small CSVs, parsed once per distinct header instead of once per file: a study of
    thousands of cells spends its time in read_csv's per-call overhead otherwise. The rows keep
    the files' order; columns as pd.concat of the files would have them."""
    groups: Dict[str, List[str]] = {}
    for path in paths:
        text = Path(path).read_text()
        head, _, body = text.partition("\n")
        if body and not body.endswith("\n"):
            body += "\n"
        groups.setdefault(head, []).append(body)
    return [pd.read_csv(io.StringIO(head + "\n" + "".join(bodies)), **kw) for head, bodies in groups.items()]


def collect(dirs: Sequence[Path]) -> pd.DataFrame:
    """All cell rows under the given directories (each cell writes one results.csv)."""
    # A cell's results.csv sits beside its cell.json; a report's does not.
    cells = CellDir.find(dirs, CellDir.RESULTS)
    if not cells:
        raise FileNotFoundError(f"no cell results (results.csv beside cell.json) under {', '.join(map(str, dirs))}")
    # A cell id is text: read as a number, "254476041609" would not match its predictions' id.
    frames = [current_columns(f) for f in read_csvs([c.results for c in cells], dtype={"cell_id": str})]
    df = pd.concat(frames, ignore_index=True)
    return order_columns(df.drop_duplicates(subset=["cell_id", "target"], keep="last"))


def collect_snapshots(dirs: Sequence[Path]) -> pd.DataFrame:
    """The rows of the steps that cells kept besides their last (snapshots.csv); empty when none did.
    They feed the compute axis only: tables and tests compare the cells' last steps."""
    cells = CellDir.find(dirs, CellDir.RESULTS, CellDir.SNAPSHOTS)
    if not cells:
        return pd.DataFrame()
    frames = [current_columns(f) for f in read_csvs([c.snapshots for c in cells], dtype={"cell_id": str})]
    return order_columns(pd.concat(frames, ignore_index=True).drop_duplicates(subset=["cell_id", "target", "step"],
                                                                              keep="last"))


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
    """Per-image fooled flags and adversarial predictions of every cell (predictions.csv beside cell.json)."""
    frames = read_csvs([c.predictions for c in CellDir.find(dirs, CellDir.PREDICTIONS)],
                       usecols=["cell_id", "target", "image_id", "adv_pred", "fooled"], dtype={"cell_id": str})
    if not frames:
        raise FileNotFoundError("no per-image flags (predictions.csv with a 'fooled' column) found")
    return pd.concat(frames).drop_duplicates(["cell_id", "target", "image_id"], keep="last")
