"""Hydra's and submitit's side of a run: Hydra's run_and_report with flatbench's one-line errors and
the sweep's failure summary, and submitit's sacct warning said once."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .errors import CellFailed, composition_error, expected_errors
from .failures import START, sweep_summary


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
