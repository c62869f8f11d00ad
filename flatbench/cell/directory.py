"""A cell directory, owned in one place: which files it holds, its cell.json (read and
written only here), who it belongs to, the one reuse rule for its files, and how cells are
found under a sweep (the CLI's ``evaluate``, the report, its plots and flatness tables)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from flatbench.core.io import atomic_write_text
from flatbench.core.layout import CellLayout
from flatbench.core.migration import old_cell
from flatbench.core.registry import ConfigError

log = logging.getLogger("flatbench")

META = CellLayout.META
OVERRIDES = CellLayout.OVERRIDES


def setting_changes(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    """'eps 32 -> 16, seed 0 -> 5': the hashed settings in which two cells differ."""
    keys = [k for k in dict.fromkeys([*old, *new]) if json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(new.get(k), sort_keys=True, default=str)]
    shown = [f"{k} {old.get(k)} -> {new.get(k)}" if not isinstance(new.get(k), (dict, list)) else k for k in keys]
    return ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else "")


class CellDir(CellLayout):
    """One cell's output directory (its file names: :class:`~flatbench.core.layout.CellLayout`)."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CellDir({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, CellDir) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    def file(self, name: str) -> Path:
        if name not in self.FILES:
            raise KeyError(f"{name!r} is not a cell file ({', '.join(self.FILES)})")
        return self.path / name

    @property
    def results(self) -> Path:
        return self.file(self.RESULTS)

    @property
    def predictions(self) -> Path:
        return self.file(self.PREDICTIONS)

    @property
    def adv(self) -> Path:
        return self.file(self.ADV)

    @property
    def snapshots(self) -> Path:
        """The rows of the steps kept besides the last (``snapshots=[...]``), with a ``step`` column."""
        return self.file(self.SNAPSHOTS)

    @property
    def snapshot_predictions(self) -> Path:
        return self.file(self.SNAPSHOT_PREDICTIONS)

    # ------------------------------------------------------------------ cell.json
    def record(self) -> Optional[Dict[str, Any]]:
        """cell.json, or None when it is missing or unreadable (a cell not finished)."""
        try:
            return json.loads((self.path / META).read_text())
        except (OSError, ValueError):
            return None

    def is_cell(self) -> bool:
        """Whether this directory holds a finished cell's record (its files are then its own)."""
        return (self.path / META).exists()

    def cell_id(self) -> Optional[str]:
        return (self.record() or {}).get("cell_id")

    def write_meta(self, meta: Dict[str, Any]) -> None:
        """Written last: it marks the cell finished, and the report reads only cells that have it."""
        atomic_write_text(self.path / META, json.dumps(meta, indent=2, default=str))

    def overrides(self) -> List[str]:
        import yaml   # Hydra's overrides.yaml: a list of strings

        return list(yaml.safe_load((self.path / OVERRIDES).read_text()) or [])

    # ------------------------------------------------------------------ the one reuse rule
    def owner(self) -> Optional[Dict[str, Any]]:
        """Who owns the cell files: ``{"cell_id": ..., "semantic": ...}``, or None when there are none.

        The owner is the id in cell.json; without one (a cell killed while writing its outputs),
        the id stored in its adv.safetensors; ``cell_id`` is None when files exist but name no cell.
        """
        from flatbench.cell.store import adv_cell_id

        if not any((self.path / f).exists() for f in self.FILES if f != self.ERROR):
            return None
        meta = self.record()
        if meta is not None:
            return {"cell_id": meta.get("cell_id"), "semantic": meta.get("semantic") or {}}
        try:
            return {"cell_id": adv_cell_id(self.adv), "semantic": {}}
        except Exception:  # noqa: BLE001 - a missing or unreadable set names no cell
            return {"cell_id": None, "semantic": {}}

    def finished_rows(self, cell_id: str, keys: Dict[str, str], flatness: Any = None,
                      snapshots: Sequence[int] = ()) -> Optional[pd.DataFrame]:
        """The rows of this cell if it finished here with the same id, targets and flatness settings,
        and with (at least) the snapshots asked for."""
        meta = self.record()
        if meta is None or not self.results.exists():
            return None
        if meta.get("cell_id") != cell_id or meta.get("targets") != keys or meta.get("flatness") != flatness:
            return None
        if not set(snapshots) <= set(meta.get("snapshots") or ()):
            return None
        from flatbench.cell.store import read_whole

        def whole(path):
            df = pd.read_csv(path, dtype={"cell_id": str})
            if not {"cell_id", "target", "asr"} <= set(df.columns) or set(df["cell_id"].astype(str)) != {cell_id}:
                raise ValueError(f"not the rows of cell {cell_id}")
            return df

        rows = read_whole(self.results, whole)
        if rows is not None and flatness and flatness.get("enabled") and \
                read_whole(self.file(self.FLATNESS), pd.read_csv) is None:
            return None   # its flatness is missing or damaged: the cell runs again (the set is reused)
        return rows

    def claim(self, cell_id: str, semantic: Dict[str, Any], mode: str) -> None:
        """The files are used only when they are this cell's.

        A directory holding another cell's results is recomputed into by a run: the old cell's
        files are removed first (cell.json first, so that a killed run never leaves them marked
        finished) and the log names the old cell and where its adversarial set stays cached.
        ``flatbench evaluate`` only adds targets to the cell a directory holds, so there the
        mismatch is refused with one line and nothing is touched.
        """
        owner = self.owner()
        if owner is None or owner["cell_id"] == cell_id:
            return
        old = owner["cell_id"] or "of unknown id"
        diff = (old_cell(owner["semantic"]) or setting_changes(owner["semantic"], semantic)) if owner["semantic"] else ""
        if mode == "evaluate":
            raise ConfigError(f"{self.path} holds cell {old}, but these settings describe cell {cell_id}"
                              f"{' (' + diff + ')' if diff else ''}; `flatbench evaluate` adds targets to the cell a "
                              "directory holds and never changes its settings: run `flatbench` with the new settings "
                              "into another directory")
        log.warning("%s holds the results of cell %s, not of this cell %s%s: replacing them (the old cell's "
                    "adversarial set and evaluations stay in the cache under adv/%s; rerun its settings to get its "
                    "rows back)", self.path, old, cell_id, f" ({diff})" if diff else "", old)
        for f in self.FILES:
            (self.path / f).unlink(missing_ok=True)
        self._set_aside_report(old)

    def _set_aside_report(self, old: str) -> None:
        """A report made of the old cell (``flatbench-report DIR`` writes DIR/report) would sit beside the
        new cell's rows as if it were theirs: it is kept, renamed ``report.cell-<old id>``."""
        from flatbench.core.layout import SweepLayout

        report = self.path / SweepLayout.REPORT
        if not report.is_dir():
            return
        old = old.replace(" ", "-")
        dest, k = self.path / f"{SweepLayout.REPORT}.cell-{old}", 1
        while dest.exists():
            k += 1
            dest = self.path / f"{SweepLayout.REPORT}.cell-{old}-{k}"
        report.rename(dest)
        log.warning("%s was the report of cell %s: moved aside to %s", report, old, dest.name)

    def seed_eval_cache(self, cell_id: str, keys: Dict[str, str], store) -> None:
        """Copy an earlier run's per-image predictions of this cell into the evaluation cache, so
        that `flatbench evaluate` on an old sweep, or a rerun whose cache was cleaned, evaluates
        only the (cell, target) pairs that are really missing."""
        meta = self.record()
        if meta is None or meta.get("cell_id") != cell_id or not self.predictions.exists():
            return
        old = meta.get("targets") or {}
        want = [k for k, v in keys.items() if old.get(k) == v and not store.eval_path(v).exists()]
        if not want:
            return
        pred = pd.read_csv(self.predictions)
        for k in want:
            rows = pred[pred["target"] == k][["image_id", "clean_pred", "adv_pred"]]
            if len(rows):
                atomic_write_text(store.eval_path(keys[k]), rows.to_csv(index=False))

    def crafted_on(self) -> Optional[str]:
        """The device type the cell held here was crafted on (None when unknown)."""
        owner = self.owner()
        return (owner or {}).get("semantic", {}).get("device")

    # ------------------------------------------------------------------ finding cells
    @classmethod
    def find(cls, roots: Sequence[Path], *having: str) -> List["CellDir"]:
        """Finished cells (a cell.json) under ``roots`` that also hold the files ``having``.
        A missing root is an error: a typo must not read as an empty sweep."""
        out: List[CellDir] = []
        for root in roots:
            root = Path(root)
            if not root.exists():
                raise FileNotFoundError(f"no such sweep directory: {root}")
            for meta in sorted(root.rglob(META)):
                cell = cls(meta.parent)
                if all((cell.path / f).exists() for f in having):
                    out.append(cell)
        return list(dict.fromkeys(out))

    @classmethod
    def find_crafted(cls, root: Path) -> List["CellDir"]:
        """Cells of a sweep with their overrides and an adversarial set or a finished record
        (what ``flatbench evaluate`` can extend)."""
        return sorted({cls(p.parent.parent) for p in Path(root).rglob(str(OVERRIDES))
                       if (p.parent.parent / META).exists() or (p.parent.parent / CellLayout.ADV).exists()},
                      key=lambda c: c.path)
