"""A cell's error record (``error.json`` in its directory) and the one-line summary of the cells of a
sweep that failed in this command: the records a failure leaves, read back for the user."""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import OmegaConf

from flatbench.core.io import atomic_write_text
from flatbench.core.layout import CellLayout

ERROR_FILE = CellLayout.ERROR
START = {"time": None}  # when this command started: error records older than this are another run's


def started() -> None:
    START["time"] = time.time()


def record_error(out_dir: Path, exc: BaseException, cell: Dict[str, Any]) -> Path:
    path = out_dir / ERROR_FILE
    atomic_write_text(path, json.dumps({**cell, "type": type(exc).__name__, "message": str(exc),
                                        "traceback": "".join(traceback.format_exception(exc))}, indent=2))
    return path


def sweep_summary(sweep_dir: Path, since: Optional[float]) -> Optional[str]:
    """'N of M cells failed: 1 (surrogate=x), ...' from the error records this command wrote."""
    cells = [d for d in sweep_dir.iterdir() if (d / CellLayout.OVERRIDES).exists()
             and (since is None or (d / CellLayout.OVERRIDES).stat().st_mtime >= since - 1)]
    overrides = {d: OmegaConf.to_container(OmegaConf.load(d / CellLayout.OVERRIDES)) for d in cells}
    # Name each failed cell by the overrides that vary across the sweep (what the user swept).
    seen: dict = {}
    for ov in overrides.values():
        for o in ov:
            k, _, v = o.partition("=")
            seen.setdefault(k, set()).add(v)
    swept = {k for k, vals in seen.items() if len(vals) > 1 or sum(k == o.partition("=")[0] for ov in overrides.values()
                                                                   for o in ov) < len(cells)}
    failed: dict = {}   # message -> the cells that failed with it
    for d in sorted(cells, key=lambda p: (len(p.name), p.name)):
        f = d / ERROR_FILE
        if f.exists() and (since is None or f.stat().st_mtime >= since - 1):
            rec = json.loads(f.read_text())
            shown = [o for o in overrides[d] if o.partition("=")[0] in swept] or overrides[d]
            message = " ".join(str(rec.get("message", rec.get("type", ""))).split())
            failed.setdefault(message[:300] + ("..." if len(message) > 300 else ""), []).append(
                f"{rec.get('num', d.name)} ({' '.join(shown)})")
    if not failed:
        return None
    n = sum(len(v) for v in failed.values())
    why = "; ".join(f"{', '.join(where)}: {message}" for message, where in failed.items())
    rest = "no cell finished" if n == len(cells) else "the other cells finished"
    return (f"flatbench: {n} of {len(cells)} cells failed: {why}; {rest}; each failed cell's error is in its "
            f"{ERROR_FILE} under {sweep_dir}")
