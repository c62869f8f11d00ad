"""Atomic file writes (a temp file in the same directory, fsync, then rename) and a file lock.

A reader (or a process killed mid-write) therefore sees either the old file or the new
one, never a partial file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

PathLike = Union[str, os.PathLike]


class WriteError(OSError):
    """A file could not be written (read-only directory, full disk, ...); names the path."""


def file_mode() -> int:
    """The mode a new file gets from open(): 0o666 less the process's umask (mkstemp's 0600 would keep
    a lab's shared storage from reading the outputs)."""
    try:   # Linux reports the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, file_mode())
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc} (is the directory writable?)") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with _suppress():
            os.unlink(tmp)
        raise WriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc} (disk full or read-only?); "
                                    "the previous version, if any, is untouched") from None
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    return path


def check_writable(directory: PathLike) -> None:
    """Fail before any compute when ``directory`` cannot be created or written."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise WriteError(exc.errno, f"output directory {d} is not writable: {exc.strerror or exc}") from None


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


@contextlib.contextmanager
def locked(path: PathLike):
    """An exclusive lock on ``path`` (created if missing) across processes: what one process
    does under it (train a testbed model, measure the chunk) the others wait for, then reuse."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_json(path: PathLike) -> Dict[str, Any]:
    """The JSON object in ``path``; {} when it is missing, unreadable or not an object."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def merge_json(path: PathLike, change: Callable[[Dict[str, Any]], Optional[Dict[str, Any]]],
               sort_keys: bool = True) -> Optional[Dict[str, Any]]:
    """Read the JSON object in ``path``, let ``change`` return the new one (None: leave the file as it
    is) and write that atomically; the caller holds the file's lock. Returns what was written."""
    data = change(read_json(path))
    if data is not None:
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=sort_keys))
    return data


def update_json(path: PathLike, change: Callable[[Dict[str, Any]], Optional[Dict[str, Any]]],
                lock: Optional[PathLike] = None, sort_keys: bool = True) -> Optional[Dict[str, Any]]:
    """:func:`merge_json` under an exclusive lock (``lock``, else ``.NAME.lock`` beside the file),
    so that processes that merge into one file (the tuning file, the rates file, a sweep's progress
    record) never lose each other's entries. None when the file cannot be written (a read-only
    cache or sweep directory simply keeps nothing)."""
    path = Path(path)
    try:
        with locked(lock if lock is not None else path.with_name(f".{path.name}.lock")):
            return merge_json(path, change, sort_keys)
    except OSError:
        return None
