"""What a user sees when something goes wrong: expected errors (a bad config or data, missing
weights, non-finite values, out of memory with its advice, unwritable files) are one line on
stderr; anything else is a bug and keeps its traceback. Also the error record a failed cell
leaves in its directory, the summary of a sweep's failed cells, and the wrapper that gives the
Hydra task this behaviour lives in :mod:`flatbench.job`."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from .layout import CellLayout
from .migration import old_config_text
from .signals import EXIT_STOPPED, Stop

log = logging.getLogger("flatbench")

ERROR_FILE = CellLayout.ERROR
START = {"time": None}  # when this command started: error records older than this are another run's


def expected_errors() -> tuple:
    """Errors flatbench raises on purpose: one line each. Anything else is a bug."""
    from .attacks.loop import NonFiniteError
    from .registry import ConfigError

    return (ConfigError, NonFiniteError, OSError)


def _verbose() -> bool:
    from hydra.core.hydra_config import HydraConfig

    try:
        return bool(HydraConfig.get().verbose)
    except ValueError:
        return False


def full_error() -> bool:
    """Whether the user asked for tracebacks (hydra.verbose=true, HYDRA_FULL_ERROR=1, FLATBENCH_TRACEBACK)."""
    return _verbose() or os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(os.environ.get("FLATBENCH_TRACEBACK"))


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or type(exc).__name__}"


def stopped(exc: Stop) -> None:
    print(f"flatbench: {exc}; finished batches are kept, rerun (or requeue) to resume", file=sys.stderr)
    sys.exit(EXIT_STOPPED)


def guarded(fn, *args, composing: bool = False, **kwargs):
    """Run fn; expected errors become one line on stderr and exit 1 (SIGTERM stops exit 143).
    ``composing``: fn composes the user's overrides (``flatbench plan``), so Hydra's and OmegaConf's
    composition errors are the user's mistakes too, printed as the main command prints them."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    composition = (HydraException, OmegaConfBaseException) if composing else ()
    try:
        return fn(*args, **kwargs)
    except Stop as exc:
        stopped(exc)
    except expected_errors() as exc:
        if full_error():
            raise
        print(f"flatbench: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except composition as exc:
        if full_error():
            raise
        print(f"flatbench: error: {composition_error(exc)}", file=sys.stderr)
        sys.exit(1)


class CellFailed(Exception):
    """One cell of a multirun failed with an expected error (already printed in one line).

    Raised, not exited, so that Hydra records the job as failed and runs the other cells."""


def record_error(out_dir: Path, exc: BaseException, cell: Dict[str, Any]) -> Path:
    from .io import atomic_write_text

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


def compact_run_and_report(func):
    """Hydra's run_and_report, but a composition error becomes one line on stderr (exit 1);
    HYDRA_FULL_ERROR=1 or hydra.verbose=true keeps Hydra's full report."""
    try:
        return func()
    except Exception as exc:  # noqa: BLE001 - everything Hydra would report
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        cell = getattr(exc, "flatbench_cell", None)
        if cell and cell.get("multirun"):
            summary = sweep_summary(Path(cell["sweep_dir"]), START["time"])
            if summary:
                print(summary, file=sys.stderr)
            if isinstance(exc, CellFailed):
                sys.exit(1)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a.startswith("hydra.verbose=") and not a.endswith("=false")
                                                            for a in sys.argv):
            raise
        if type(exc).__name__ == "FailedJobError" and "sbatch" in str(exc):
            # submitit could not submit (no SLURM here, or its config not found): one line.
            hint = ("; no SLURM configuration found: on the local cluster run `eval \"$(scripts/slurm_local.sh env)\"` "
                    "first" if "configuration source" in str(exc) else "")
            print(f"flatbench: error: sbatch failed: {' '.join(str(exc).split())}{hint}", file=sys.stderr)
            sys.exit(1)
        # Composition errors (Hydra's, OmegaConf's, flatbench's checks) are one line; a bug keeps its traceback.
        if not isinstance(exc, (HydraException, OmegaConfBaseException, *expected_errors())):
            raise
        print(f"flatbench: error: {composition_error(exc)}", file=sys.stderr)
        sys.exit(1)


def composition_error(exc: BaseException) -> str:
    """A composition error (Hydra's, OmegaConf's, flatbench's checks) as one line, with the
    closest option of a misspelt group choice and the renamed names when they are the cause."""
    import re

    from .compose import CONFIG_DIR
    from .registry import suggest

    text = str(exc) + ("\n" + str(exc.__cause__) if exc.__cause__ is not None else "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
    lines = list(dict.fromkeys(ln for ln in lines if not ln.startswith(("Config search path", "provider="))))
    miss = re.search(r"Could not (?:find|load) '([\w/]+)/([^']+)'", text)
    if miss:
        options = [p.stem for p in (Path(CONFIG_DIR) / miss.group(1)).glob("*.yaml")]
        lines.append(suggest(miss.group(2), options).strip())
    hint = old_config_text(text)  # a user's own config written for an older version
    if hint:
        lines.append(hint)
    return "; ".join(ln for ln in lines if ln) or type(exc).__name__


def compose_or_exit(overrides: List[str]):
    """:func:`flatbench.compose.compose`, with a bad override as one line on stderr and exit 1,
    as on the main command (``evaluate``, ``describe``)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .compose import compose

    try:
        return compose(overrides)
    except (HydraException, OmegaConfBaseException, *expected_errors()) as exc:
        if full_error():
            raise
        print(f"flatbench: error: {composition_error(exc)}", file=sys.stderr)
        sys.exit(1)


class OnceSacctWarning(logging.Filter):
    """On a cluster without accounting (scripts/slurm_local.sh) submitit's every poll warns that
    sacct failed; it then waits for the jobs' result files, which works. Say it once."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if OnceSacctWarning.seen:
            return False
        OnceSacctWarning.seen = True
        record.msg, record.args = ("sacct is not available (no accounting on this cluster?): submitit follows the jobs "
                                   "through their result files instead (further sacct warnings hidden)"), ()
        return True


def started() -> None:
    START["time"] = time.time()
