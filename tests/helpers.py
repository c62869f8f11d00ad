"""What the tests share, by job (no test module imports another): here the one command-line runner
and the environment it runs in, Hydra composition and the report's entry function in-process;
generated image trees in images.py; the analytic models with known gradients and Hessians in
analytic.py; references written out from TransferAttack's public code in ta_reference.py (the
gradient methods) and ta_reference_views.py (input transformations and ensembles)."""
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from flatbench.entry.compose import CONFIG_DIR
from flatbench.entry.config import register_schema

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the command line

def zoo_env(zoo_dir) -> dict:
    """The environment that selects ``zoo_dir``'s weights in a subprocess (none: the pinned ones)."""
    return {} if zoo_dir is None else {"FLATBENCH_ZOO": str(zoo_dir)}


BIN = Path(sys.executable).parent


def command(args, zoo_dir=None, cwd=None, extra_env=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    """One of the package's commands (``args[0]``: flatbench, flatbench-report, ...), its exit status and
    output captured (nothing asserted); the one runner the tests share. It runs in ``env`` (default: this
    process's environment) with ``zoo_dir``'s weights, W&B offline and ``extra_env`` on top."""
    env = dict(os.environ if env is None else env, **zoo_env(zoo_dir), WANDB_MODE="offline", **(extra_env or {}))
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run(args, zoo_dir, cwd, extra_env=None, timeout=600):
    """:func:`command`, which must succeed."""
    p = command(args, zoo_dir, cwd, extra_env, timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def fails(args, cwd, extra_env=None, rc=1) -> str:
    """Run a command that must fail with exit code ``rc``; its stderr, which must be one line (no traceback)."""
    p = command(args, None, cwd, extra_env)
    assert p.returncode == rc, (p.returncode, p.stdout[-2000:] + p.stderr[-3000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "][flatbench][" not in ln]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    return lines[0]


SMALL = ["n_images=8", "targets=digits_small", "progress=false"]


def compose_config(overrides, hydra=False):
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


def report_main(argv, capsys):
    """flatbench-report's entry function in this process (the console script calls the same
    main; nine process starts would cost this test 15 s): (exit code, stderr)."""
    from flatbench.report import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    return rc or 0, capsys.readouterr().err
