"""The ``flatbench`` command: a Hydra app in which one job is one cell.

    flatbench                                   # the default cell on the digits testbed
    flatbench method=pgn surrogate=digits-resnet eps=16
    flatbench -m method=mifgsm,pgn,gnp surrogate=digits-cnn,digits-vit   # a sweep
    flatbench -m experiment=digits              # the default experiment (make run)
    flatbench evaluate SWEEP_DIR targets=digits # evaluate stored adversarial sets on more targets
    flatbench describe pgn estimator.beta=0.8    # the loop a run would execute, written out from its parts
    torchrun --nproc-per-node=2 -m flatbench ...            # one cell across 2 processes/GPUs

Rerunning a sweep skips finished cells; ``force=true`` recomputes. Errors print one line on
stderr (exit 1); ``hydra.verbose=true`` shows the traceback. SIGTERM/SIGINT stop a cell
between batches, keeping its finished batches, and exit 143 so that a requeue resumes it.

This module is the task and the dispatch only: the cross-cutting work is :mod:`.job`, error
presentation :mod:`.errors`, signals :mod:`.signals`, the subcommands :mod:`.commands`, old
names :mod:`.migration` and the config directory :mod:`.compose`.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from flatbench.core.kernels import pin_kernels

pin_kernels()  # before torch's first operation: see flatbench/core/kernels.py

from omegaconf import DictConfig  # noqa: E402

from flatbench.entry.commands import SUBCOMMANDS, print_table  # noqa: E402
from flatbench.entry.compose import CONFIG_DIR  # noqa: E402
from flatbench.entry.failures import started  # noqa: E402
from flatbench.core.heap import keep_heap  # noqa: E402
from flatbench.entry.job import Job, cell_task  # noqa: E402
from flatbench.entry.launching import OnceSacctWarning, compact_run_and_report, follow_lost_tasks  # noqa: E402
from flatbench.entry.sweep import force_part_keys  # noqa: E402
from flatbench.core.layout import CellLayout  # noqa: E402
from flatbench.core.migration import current_overrides, old_override  # noqa: E402

log = logging.getLogger("flatbench")


@cell_task
def task(cfg: DictConfig, job: Job) -> Optional[float]:
    """One cell. Returns its objective (``objective``: by default the mean black-box ASR, %), the
    value a sweeper such as Optuna maximises."""
    from flatbench.cell import cell_objective, run_cell
    from flatbench.cell.loggers import sweep_group
    from flatbench.entry.settings import load_settings

    sweep = None
    if job.multirun:
        sweep = {"group": str(cfg.logger.get("group") or sweep_group(cfg.name, job.sweep_dir)), "num": job.num,
                 "dir": job.sweep_dir, "overrides": job.overrides}
    df = run_cell(load_settings(cfg), job.out_dir, sweep=sweep, stop=job.stop)
    if df is None:  # ranks > 0
        return None
    job.grad_evals = int(df.attrs.get("grad_evals_now", 0))
    job.craft_seconds = df.attrs.get("craft_seconds_now")
    print_table(df)
    log.info("results: %s", job.out_dir / CellLayout.RESULTS)
    objective = cell_objective(df, str(cfg.objective))
    log.info("objective (%s ASR, %%): %.2f", cfg.objective, objective)
    return objective


def main() -> None:
    import hydra
    import hydra._internal.utils as hydra_utils

    from flatbench.entry.config import register_schema

    started()
    keep_heap()   # before the first large tensor: see flatbench/core/heap.py
    logging.getLogger("submitit").addFilter(OnceSacctWarning())
    follow_lost_tasks()
    register_schema()
    hydra_utils.run_and_report = compact_run_and_report
    # W&B and tqdm write a lot to a non-interactive terminal; keep runs readable.
    os.environ.setdefault("WANDB_SILENT", "true")
    old = old_override(sys.argv[1:])
    if old:
        print(f"flatbench: error: {old}", file=sys.stderr)
        sys.exit(1)
    args, notes = current_overrides(sys.argv[1:])
    for note in notes:
        print(f"flatbench: note: {note}", file=sys.stderr)
    multirun = bool({"-m", "--multirun"} & set(args))
    sys.argv[1:] = force_part_keys(args) if multirun and not (args and args[0] in SUBCOMMANDS) else args
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        sys.exit(SUBCOMMANDS[sys.argv[1]](sys.argv[2:]))
    if len(sys.argv) > 1 and not sys.argv[1].startswith(("-", "~", "+")) and "=" not in sys.argv[1]:
        from flatbench.core.registry import suggest

        print(f"flatbench: error: unknown subcommand {sys.argv[1]!r}.{suggest(sys.argv[1], SUBCOMMANDS)} Subcommands: "
              f"{', '.join(SUBCOMMANDS)}; a run takes key=value overrides (flatbench --help)", file=sys.stderr)
        sys.exit(2)
    hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")(task)()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
