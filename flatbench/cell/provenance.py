"""Where a cell's numbers came from: code, libraries, weights files, hardware and CPU kernel paths.

Recorded in each cell's ``cell.json`` (``provenance``) and, flattened to a few label columns, in its
rows, so that ``flatbench-report --filter`` can keep the cells of one machine or one commit. None of
it enters ``cell_id``: the same settings on another machine are the same cell (a rerun reuses it),
and the columns say where that cell was computed.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from flatbench import __version__
from flatbench.core.kernels import cpu_model, kernels_in_effect

# The label columns of a row (flatbench.cell.columns.LABELS): provenance, not settings.
COLUMNS = ("torch_version", "git_commit", "hardware", "kernels")


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """The commit of the checkout flatbench runs from (``+dirty`` with uncommitted changes to tracked
    files); empty for an installed wheel or without git."""
    root = Path(__file__).resolve().parents[2]   # flatbench/cell/provenance.py: the checkout
    if not (root / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=None)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    from flatbench.models.testbed import file_sha256

    return file_sha256(Path(path))


def file_digest(path: Optional[Path]) -> Optional[str]:
    """The SHA-256 of a weights file; of a directory of them (an LGV set), the digest of its files' sha256sum lines."""
    if path is not None and Path(path).is_dir():
        from flatbench.models.lgv import set_digest

        return set_digest(sorted(p for p in Path(path).iterdir() if p.is_file()))
    if path is None or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def weights_file(name: str, zoo_dir: Optional[Path] = None) -> Optional[Path]:
    """The file a model's weights are read from, when it is on disk: a testbed model's pinned or
    trained safetensors, a ``NAME@PATH`` checkpoint, or a hub model's cached file; else None
    (its source's :meth:`~flatbench.models.sources.ModelSource.weights_file`)."""
    from flatbench.models import source_of

    try:
        return source_of(name).weights_file(name, zoo_dir)
    except Exception:  # noqa: BLE001 - provenance never fails a cell: an unparsable name or no file is recorded as None
        return None


def hardware(device: Any) -> str:
    """The GPU's name for a CUDA cell, else the CPU model."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return cpu_model()


def provenance(device: Any, surrogate: Iterable[str], targets: Dict[str, str],
               zoo_dir: Optional[Path] = None) -> Dict[str, Any]:
    """The cell.json record: versions, commit, weights' SHA-256 (None where no file is on disk),
    hardware and the CPU kernel paths in effect. ``targets`` maps target keys to model names."""
    import torch

    try:
        import timm

        timm_version = timm.__version__
    except ImportError:  # pragma: no cover - timm is a dependency
        timm_version = ""
    names = {*surrogate, *targets.values()}
    return {
        "flatbench": __version__, "torch": torch.__version__, "timm": timm_version,
        "python": platform.python_version(), "git_commit": git_commit(),
        "device": torch.device(device).type, "hardware": hardware(device), "cuda": torch.version.cuda or "",
        "weights_sha256": {n: file_digest(weights_file(n, zoo_dir)) for n in sorted(names)},
        "kernels": kernels_in_effect(),
    }


def provenance_columns(record: Dict[str, Any]) -> Dict[str, str]:
    """The row columns of a provenance record (:data:`COLUMNS`)."""
    k = record["kernels"]
    # A CUDA cell's numbers come from the GPU's kernels; a CPU cell's from the paths kernels.py pinned.
    kernels = "cuda" if record["device"] == "cuda" else f"{k['mode']}:{k['aten_capability']}".lower()
    return {"torch_version": record["torch"], "git_commit": record["git_commit"], "hardware": record["hardware"],
            "kernels": kernels}
