"""Adversarial sets as 8-bit images on disk: one cell's set, its batch checkpoints and its
evaluations, addressed by cell id (the rounding itself is :mod:`.quantize`)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from flatbench.core.io import atomic_write_bytes
from flatbench.core.layout import CacheLayout
from flatbench.core.registry import ConfigError

log = logging.getLogger("flatbench")

CORRUPT = ".corrupt"   # a cached file that did not read back whole is renamed to NAME.corrupt, then recomputed


def set_aside(path: Path, why: str) -> None:
    """Rename a damaged file to ``NAME.corrupt`` (kept for inspection, never read again) with one warning;
    whoever asked for it then recomputes it. Another process that moved it first is not an error."""
    path = Path(path)
    dest = path.with_name(path.name + CORRUPT)
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        return
    log.warning("%s does not read back whole (%s): moved aside to %s; recomputing it", path, why, dest.name)


def read_whole(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, or None when the file is missing; a file that does not read back whole (truncated,
    garbage, the wrong content) is set aside and None returned, so the caller recomputes it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return read(path)
    except Exception as exc:  # noqa: BLE001 - any failure to read a cache file means "not whole"
        set_aside(path, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
        return None


def read_predictions(path: Path, ids: Optional[Sequence[str]] = None):
    """A cached evaluation (image_id, clean_pred, adv_pred), whole and for ``ids`` in order, or None
    (missing, or damaged and set aside)."""
    import pandas as pd

    def read(p):
        df = pd.read_csv(p)
        missing = {"image_id", "clean_pred", "adv_pred"} - set(df.columns)
        if missing:
            raise ValueError(f"missing column(s) {sorted(missing)}")
        if ids is not None and list(df["image_id"].astype(str)) != [str(i) for i in ids]:
            raise ValueError("its image ids are not the data set's")
        for col in ("clean_pred", "adv_pred"):
            if not pd.api.types.is_integer_dtype(df[col]):
                raise ValueError(f"column {col!r} is not integer class indices")
        return df

    return read_whole(path, read)


class StoreError(ConfigError):
    """A stored set or directory belongs to another cell than the one asking for it."""


def save_adv(path: Path, images: torch.Tensor, ids: List[str], cell_id: Optional[str] = None) -> Path:
    """Store a uint8 set with its image ids and the id of the cell that crafted it."""
    from safetensors.torch import save

    if images.dtype != torch.uint8:
        raise TypeError("adversarial sets are stored as uint8")
    meta = {"ids": json.dumps(list(ids))}
    if cell_id is not None:
        meta["cell_id"] = cell_id
    data = save({"images": images.contiguous().cpu()}, metadata=meta)
    return atomic_write_bytes(path, data)


def load_adv(path: Path) -> Tuple[torch.Tensor, List[str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        ids = json.loads(f.metadata()["ids"])
        return f.get_tensor("images"), ids


def adv_cell_id(path: Path) -> Optional[str]:
    """The cell id a stored set was saved with (None for sets written before ids were stored)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("cell_id")


def _whole_set(path: Path) -> Tuple[torch.Tensor, List[str]]:
    images, ids = load_adv(path)
    if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(ids):
        raise ValueError(f"{tuple(images.shape)} {images.dtype} for {len(ids)} ids")
    return images, ids


def _json_object(path: Path) -> dict:
    found = json.loads(Path(path).read_text())
    if not isinstance(found, dict):
        raise ValueError("not a JSON object")
    return found


class AdvStore:
    """The content-addressed store of one cell's adversarial set: ``CACHE/adv/<cell_id>/``.

    ``batches/<lo>-<hi>.safetensors`` are finished batches (checkpoints while crafting);
    ``batches/<lo>-<hi>.partial.pt`` is a batch paused between two steps (its loop state);
    ``adv.safetensors`` is the whole set, written once every batch exists. Files appear by
    atomic rename only, so a killed job leaves either a whole file or none. Evaluations are
    cached beside it, one file per (target, model spec): ``eval/<key>.csv``.

    ``step``: the store of the examples after that step (``snapshots=[...]``), the same layout
    under ``steps/<step>/`` of the cell's own directory: the same cell, another point of its run.
    """

    def __init__(self, cache_dir: Path, cell_id: str, step: Optional[int] = None):
        self.cell_id, self.step, self.cache_dir = cell_id, step, Path(cache_dir)
        self.dir = CacheLayout.adv(cache_dir, cell_id, step)
        self.batches = self.dir / CacheLayout.BATCHES_DIR
        self.full = self.dir / CacheLayout.FULL_SET
        self.evals = self.dir / CacheLayout.EVAL_DIR

    def batch_path(self, lo: int, hi: int) -> Path:
        return self.batches / f"{lo:07d}-{hi:07d}.safetensors"

    def load_batch(self, lo: int, hi: int) -> Optional[torch.Tensor]:
        from safetensors.torch import load_file

        if self.full.exists():
            whole = self.load()
            if whole is not None:
                return whole[0][lo:hi]
        batch = read_whole(self.batch_path(lo, hi), lambda f: load_file(str(f))["images"])
        if batch is not None and (batch.dtype != torch.uint8 or len(batch) != hi - lo):
            set_aside(self.batch_path(lo, hi), f"{tuple(batch.shape)} {batch.dtype}, not {hi - lo} uint8 images")
            return None
        return batch

    def save_batch(self, lo: int, hi: int, images: torch.Tensor) -> None:
        from safetensors.torch import save

        atomic_write_bytes(self.batch_path(lo, hi), save({"images": images.contiguous().cpu()}))

    def partial_path(self, lo: int, hi: int) -> Path:
        return self.batches / f"{lo:07d}-{hi:07d}.partial.pt"

    def save_partial(self, lo: int, hi: int, state: dict) -> None:
        """The state of a batch paused between steps (:class:`flatbench.attacks.context.Paused`)."""
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.partial_path(lo, hi), buf.getvalue())

    def load_partial(self, lo: int, hi: int) -> Optional[dict]:
        """A paused batch's state, read with ``weights_only`` (tensors and plain containers only)."""
        return read_whole(self.partial_path(lo, hi), lambda f: torch.load(str(f), map_location="cpu", weights_only=True))

    def drop_partial(self, lo: int, hi: int) -> None:
        self.partial_path(lo, hi).unlink(missing_ok=True)

    @property
    def settings_path(self) -> Path:
        return self.batches / CacheLayout.CRAFTING

    def crafting_settings(self) -> Optional[dict]:
        """The chunk and memory format the finished batches were crafted with (None: no batch yet)."""
        try:
            found = json.loads(self.settings_path.read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) and {"chunk", "memory_format"} <= set(found) else None

    def save_crafting_settings(self, chunk: Optional[int], memory_format: str) -> None:
        from flatbench.core.io import atomic_write_text

        atomic_write_text(self.settings_path, json.dumps({"chunk": chunk, "memory_format": memory_format}))

    def load(self) -> Optional[Tuple[torch.Tensor, List[str]]]:
        """The whole set, or None when there is none. A set that does not read back whole, or whose
        record of how it was crafted (meta.json) does not, is set aside with it and crafted again."""
        if not self.full.exists():
            return None
        stored = read_whole(self.full, adv_cell_id)
        if stored is not None and stored != self.cell_id:
            raise StoreError(f"{self.full} was saved by cell {stored}, not {self.cell_id}: the cache is corrupt; "
                             f"delete {self.dir}")
        found = read_whole(self.full, _whole_set)
        meta = self.dir / CacheLayout.STORE_META
        if found is not None and meta.exists() and read_whole(meta, _json_object) is None:
            set_aside(self.full, "its meta.json did not read back whole")
            return None
        if found is None and meta.exists():
            set_aside(meta, "its adversarial set did not read back whole")
        return found

    def save(self, images: torch.Tensor, ids: List[str], meta: dict) -> None:
        save_adv(self.full, images, ids, self.cell_id)
        from flatbench.core.io import atomic_write_text

        atomic_write_text(self.dir / CacheLayout.STORE_META, json.dumps(meta, indent=2, default=str))
        # The batches are now redundant with the whole set.
        for f in [*self.batches.glob("*.safetensors"), *self.batches.glob("*.partial.pt")] if self.batches.exists() else []:
            f.unlink(missing_ok=True)

    def crafted(self) -> dict:
        return read_whole(self.dir / CacheLayout.STORE_META, _json_object) or {}

    def eval_path(self, key: str) -> Path:
        return self.evals / f"{key}.csv"

    def has_eval(self, key: str, ids: Sequence[str]) -> bool:
        """Whether a whole evaluation of target ``key`` on these images is cached (a damaged one is set aside)."""
        return read_predictions(self.eval_path(key), ids) is not None

    def snapshot(self, step: int) -> "AdvStore":
        return AdvStore(self.cache_dir, self.cell_id, step)

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)
