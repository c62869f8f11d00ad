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
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import register_schema

# The configs ship inside the package (the repository's top-level conf/ links here), so a wheel
# install finds them; users add their own with --config-dir (searched before these).
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
EXIT_STOPPED = 143  # 128 + SIGTERM: the cell did not finish; its finished batches are kept

log = logging.getLogger("flatbench")


# flatbench 0.2 gave each concept one name (issue 16): the config group that chose the update
# rule was `attack`, which is also the whole method's column; the one that chose the gradient
# estimator was `penalty`, which also held VMI and the plain gradient (`none`).
RENAMED_GROUPS = {"attack": "optimizer", "penalty": "estimator"}
RENAMED_HINT = ("flatbench 0.2 renamed the config groups attack -> optimizer and penalty -> estimator "
                "(estimator=none -> estimator=plain)")


def old_group_name(args: List[str]) -> Optional[str]:
    """The first command-line override that uses a pre-0.2 group name, with its new spelling."""
    import re

    for arg in args:
        if "=" not in arg and not arg.startswith("~"):
            continue
        key, eq, value = arg.partition("=")
        m = re.match(r"^([+~]*)((?:hydra\.sweeper\.params\.)?)(\w+)(.*)$", key)
        if not m:
            continue
        prefix, sweep, head, rest = m.groups()
        if head in RENAMED_GROUPS:
            new = RENAMED_GROUPS[head]
            value = "plain" if new == "estimator" and not rest and value == "none" else value
            return f"{arg}: {RENAMED_HINT}; write {prefix}{sweep}{new}{rest}{eq}{value}"
        if head == "estimator" and not rest and value == "none":
            return f"{arg}: the plain gradient is estimator=plain since flatbench 0.2"
    return None


def _print_table(df) -> None:
    cols = ["attack", "surrogate", "eps", "target", "role", "clean_acc", "asr"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.1f}"))


def _on_signal(signum, frame) -> None:
    from .cell.crafting import STOP_REQUESTED

    STOP_REQUESTED["signal"] = signal.Signals(signum).name
    log.warning("%s received: stopping after the current batch (finished batches are kept)", STOP_REQUESTED["signal"])


def _wrap_requeue_signal() -> None:
    """Under submitit (SLURM), USR2 announces the time limit (or a preemption): submitit's own
    handler requeues the job and exits at once. Log first, in the cell's log, what is kept."""
    usr2 = getattr(signal, "SIGUSR2", None)
    prev = signal.getsignal(usr2) if usr2 is not None else None
    if not callable(prev) or getattr(prev, "flatbench_wrapped", False):
        return

    def on_usr2(signum, frame):
        log.warning("SIGUSR2 (time limit or preemption): submitit requeues this cell now; its finished batches are "
                    "kept and the requeued job resumes from them (the batch in progress is recomputed)")
        prev(signum, frame)

    on_usr2.flatbench_wrapped = True
    signal.signal(usr2, on_usr2)


def _verbose() -> bool:
    try:
        return bool(HydraConfig.get().verbose)
    except ValueError:
        return False


def expected_errors() -> tuple:
    """Errors flatbench raises on purpose (bad config or data, missing weights, non-finite values,
    out of memory with its advice, unwritable files): one line each. Anything else is a bug and
    keeps its traceback."""
    from .attacks.loop import NonFiniteError
    from .registry import ConfigError

    return (ConfigError, NonFiniteError, OSError)


def _full_error() -> bool:
    return _verbose() or os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(os.environ.get("FLATBENCH_TRACEBACK"))


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or type(exc).__name__}"


def guarded(fn, *args, **kwargs):
    """Run fn; expected errors become one line on stderr and exit 1 (SIGTERM stops exit 143)."""
    from .cell.crafting import Stop

    try:
        return fn(*args, **kwargs)
    except Stop as exc:
        print(f"flatbench: {exc}; finished batches are kept, rerun (or requeue) to resume", file=sys.stderr)
        sys.exit(EXIT_STOPPED)
    except expected_errors() as exc:
        if _full_error():
            raise
        print(f"flatbench: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(1)


class CellFailed(Exception):
    """One cell of a multirun failed with an expected error (already printed in one line).

    Raised, not exited, so that Hydra records the job as failed and runs the other cells."""


ERROR_FILE = "error.json"
START = {"time": None}  # when this command started: error records older than this are another run's


def _record_error(out_dir: Path, exc: BaseException, cell: dict) -> Path:
    import json
    import traceback

    from .io import atomic_write_text

    path = out_dir / ERROR_FILE
    atomic_write_text(path, json.dumps({**cell, "type": type(exc).__name__, "message": str(exc),
                                        "traceback": "".join(traceback.format_exception(exc))}, indent=2))
    return path


def task(cfg: DictConfig) -> Optional[float]:
    """One cell. Returns its objective (``objective``: by default the mean black-box ASR, %), the
    value a sweeper such as Optuna maximises."""
    from hydra.types import RunMode

    from .cell import cell_objective, run_cell
    from .cell.crafting import Stop
    from .dist import world
    from .loggers import sweep_group

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    _wrap_requeue_signal()
    w = guarded(world)
    hc = HydraConfig.get()
    # Under torchrun every rank must write into rank 0's directory (timestamps may differ).
    out_dir = Path(w.broadcast(str(hc.runtime.output_dir)))
    multirun = hc.mode == RunMode.MULTIRUN
    cell = {"multirun": multirun, "num": hc.job.get("num"), "overrides": list(hc.overrides.task),
            "sweep_dir": str(Path(hc.sweep.dir).resolve()) if multirun else None, "cell_dir": str(out_dir)}
    sweep = None
    if multirun:
        sweep = {"group": str(cfg.logger.get("group") or sweep_group(cfg.name, hc.sweep.dir)), "num": cell["num"],
                 "dir": cell["sweep_dir"], "overrides": cell["overrides"]}
    if w.main:
        (out_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        df = run_cell(cfg, out_dir, sweep=sweep)
    except Stop as exc:
        # The whole sweep stops (exit 143), as a single cell does: a requeue or rerun resumes it.
        print(f"flatbench: {exc}; finished batches are kept, rerun (or requeue) to resume", file=sys.stderr)
        sys.exit(EXIT_STOPPED)
    except Exception as exc:  # noqa: BLE001 - recorded in the cell dir, then reported or re-raised
        where = None
        if w.main:
            try:
                where = _record_error(out_dir, exc, cell)
            except OSError:
                pass  # an unwritable cell dir is itself the error being reported
        exc.flatbench_cell = cell
        if not isinstance(exc, expected_errors()) or _full_error():
            raise  # a bug, or a traceback asked for: Hydra records the job as failed and shows it
        if not multirun:
            print(f"flatbench: error: {one_line(exc)}", file=sys.stderr)
            sys.exit(1)
        print(f"flatbench: cell {cell['num']} failed: {one_line(exc)}" + (f" (details in {where})" if where else ""),
              file=sys.stderr)
        # Raised, not exited: Hydra records the failed job and runs the remaining cells.
        failed = CellFailed(one_line(exc))
        failed.flatbench_cell = cell
        raise failed from None
    if df is None:
        return None
    _print_table(df)
    log.info("results: %s", out_dir / "results.csv")
    objective = cell_objective(df, str(cfg.objective))
    log.info("objective (%s ASR, %%): %.2f", cfg.objective, objective)
    return objective


def sweep_summary(sweep_dir: Path, since: Optional[float]) -> Optional[str]:
    """'N of M cells failed: 1 (surrogate=x), ...' from the error records this command wrote."""
    import json

    cells = [d for d in sweep_dir.iterdir() if (d / ".hydra" / "overrides.yaml").exists()
             and (since is None or (d / ".hydra" / "overrides.yaml").stat().st_mtime >= since - 1)]
    overrides = {d: OmegaConf.to_container(OmegaConf.load(d / ".hydra" / "overrides.yaml")) for d in cells}
    # Name each failed cell by the overrides that vary across the sweep (what the user swept).
    seen: dict = {}
    for ov in overrides.values():
        for o in ov:
            k, _, v = o.partition("=")
            seen.setdefault(k, set()).add(v)
    swept = {k for k, vals in seen.items() if len(vals) > 1 or sum(k == o.partition("=")[0] for ov in overrides.values()
                                                                   for o in ov) < len(cells)}
    failed = []
    for d in sorted(cells, key=lambda p: (len(p.name), p.name)):
        f = d / ERROR_FILE
        if f.exists() and (since is None or f.stat().st_mtime >= since - 1):
            rec = json.loads(f.read_text())
            shown = [o for o in overrides[d] if o.partition("=")[0] in swept] or overrides[d]
            failed.append(f"{rec.get('num', d.name)} ({' '.join(shown)})")
    if not failed:
        return None
    return (f"flatbench: {len(failed)} of {len(cells)} cells failed: {'; '.join(failed)}; the other cells finished; "
            f"each failed cell's error is in its {ERROR_FILE} under {sweep_dir}")


def _cell_dirs(root: Path) -> List[Path]:
    return sorted({p.parent.parent for p in root.rglob(".hydra/overrides.yaml") if (p.parent.parent / "cell.json").exists()
                   or (p.parent.parent / "adv.safetensors").exists()})


def evaluate_main(argv: List[str]) -> int:
    """``flatbench evaluate DIR... [OVERRIDES]``: evaluate the stored adversarial sets of every
    cell under DIR with the cell's own config plus OVERRIDES (e.g. ``targets=[digits,cnn]``).
    Only (cell, target) pairs without a stored evaluation are computed; nothing is recrafted."""
    from .cell import run_cell

    if not argv or argv[0] in ("-h", "--help"):
        print(evaluate_main.__doc__)
        return 0 if argv else 2
    dirs = [Path(a) for a in argv if "=" not in a]
    extra = [a for a in argv if "=" in a]
    cells = [c for d in dirs for c in (_cell_dirs(d) if d.is_dir() else [])]
    if not cells:
        print(f"flatbench evaluate: error: no cells (.hydra/overrides.yaml with an adversarial set) under "
              f"{', '.join(map(str, dirs)) or 'the given directories'}", file=sys.stderr)
        return 2
    keys = {o.split("=", 1)[0].lstrip("+~") for o in extra}
    for cell in cells:
        own = [o for o in OmegaConf.to_container(OmegaConf.load(cell / ".hydra" / "overrides.yaml"))
               if o.split("=", 1)[0].lstrip("+~") not in keys]
        old = old_group_name(own)
        if old:
            print(f"flatbench evaluate: error: {cell} was made by flatbench 0.1 ({old}); 0.2 gives it another cell id, "
                  "so its stored set cannot be extended: rerun its settings with the new names", file=sys.stderr)
            return 1
        cfg = compose_or_exit(own + extra)
        print(f"== {cell}")
        df = guarded(run_cell, cfg, cell, mode="evaluate")
        if df is not None:
            _print_table(df)
    return 0


def _compact_run_and_report(func):
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
    closest option of a misspelt group choice and the 0.2 renames when they are the cause."""
    import re

    text = str(exc) + ("\n" + str(exc.__cause__) if exc.__cause__ is not None else "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
    lines = list(dict.fromkeys(ln for ln in lines if not ln.startswith(("Config search path", "provider="))))
    miss = re.search(r"Could not (?:find|load) '([\w/]+)/([^']+)'", text)
    if miss:
        from .registry import suggest

        options = [p.stem for p in (Path(CONFIG_DIR) / miss.group(1)).glob("*.yaml")]
        lines.append(suggest(miss.group(2), options).strip())
    if re.search(r"'(?:attack|penalty)'|\b(?:attack|penalty)/", text):
        lines.append(RENAMED_HINT + ": update the config files")  # a user's own config written for 0.1
    return "; ".join(ln for ln in lines if ln) or type(exc).__name__


def compose_or_exit(overrides: List[str]) -> DictConfig:
    """The config that `flatbench OVERRIDES` would run, composed outside a Hydra app (evaluate,
    describe); a bad override is one line on stderr and exit 1, as on the main command."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException, *expected_errors()) as exc:
        if _full_error():
            raise
        print(f"flatbench: error: {composition_error(exc)}", file=sys.stderr)
        sys.exit(1)


def describe_main(argv: List[str]) -> int:
    """``flatbench describe [METHOD] [OVERRIDES]``: the loop that ``flatbench METHOD OVERRIDES``
    would run, written out from its parts with their values (nothing is loaded or run).
    Example: ``flatbench describe pgn estimator.beta=0.8 optimizer=nifgsm transforms=[dim]``."""
    if argv and argv[0] in ("-h", "--help"):
        print(describe_main.__doc__)
        return 0
    unknown = [a for a in argv[1:] if "=" not in a] + [a for a in argv[:1] if a.startswith("-")]
    if unknown:
        print(f"flatbench describe: error: expected METHOD then key=value overrides, got {unknown[0]!r}", file=sys.stderr)
        return 2
    print(describe_text(argv))
    return 0


def describe_text(argv: List[str]) -> str:
    """What ``flatbench describe ARGV`` prints (docs/methods.md is made of these)."""
    from .attacks import build_attack
    from .config import attack_kwargs, resolve

    method = [f"method={argv[0]}"] if argv and "=" not in argv[0] else []
    cfg = compose_or_exit(method + [a for a in argv if "=" in a])
    s = guarded(resolve, cfg)
    attack = guarded(build_attack, None, **attack_kwargs(s))
    tfs = ",".join(s.transforms)
    return (f"# flatbench {' '.join(argv)}: optimizer={s.optimizer} estimator={s.estimator} transforms=[{tfs}]\n"
            + attack.describe())


class _OnceSacctWarning(logging.Filter):
    """On a cluster without accounting (scripts/slurm_local.sh) submitit's every poll warns that
    sacct failed; it then waits for the jobs' result files, which works. Say it once."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if _OnceSacctWarning.seen:
            return False
        _OnceSacctWarning.seen = True
        record.msg, record.args = ("sacct is not available (no accounting on this cluster?): submitit follows the jobs "
                                   "through their result files instead (further sacct warnings hidden)"), ()
        return True


def main() -> None:
    import hydra._internal.utils as hydra_utils

    import time

    START["time"] = time.time()
    logging.getLogger("submitit").addFilter(_OnceSacctWarning())
    register_schema()
    hydra_utils.run_and_report = _compact_run_and_report
    # W&B and tqdm write a lot to a non-interactive terminal; keep runs readable.
    os.environ.setdefault("WANDB_SILENT", "true")
    old = old_group_name(sys.argv[1:])
    if old:
        print(f"flatbench: error: {old}", file=sys.stderr)
        sys.exit(1)
    if len(sys.argv) > 1 and sys.argv[1] == "list":
        from .listing import main as list_main

        sys.exit(list_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "describe":
        sys.exit(describe_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "evaluate":
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        sys.exit(evaluate_main(sys.argv[2:]))
    hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")(task)()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
