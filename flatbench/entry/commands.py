"""The subcommands beside the main run: ``flatbench evaluate``, ``flatbench describe``,
``flatbench list`` (:mod:`flatbench.entry.listing`), ``flatbench plan`` (:mod:`flatbench.entry.planning`),
``flatbench export`` (:mod:`flatbench.cell.export`) and ``flatbench fetch-weights``
(:mod:`flatbench.entry.fetch_weights`)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List

from flatbench.entry.errors import compose_or_exit, guarded
from flatbench.core.migration import old_override


def print_table(df) -> None:
    cols = ["attack", "surrogate", "eps", "target", "role", "clean_acc", "asr"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.1f}"))


def evaluate_main(argv: List[str]) -> int:
    """``flatbench evaluate DIR... [OVERRIDES]``: evaluate the stored adversarial sets of every
    cell under DIR with the cell's own config plus OVERRIDES (e.g. ``targets=[digits,cnn]``).
    Only (cell, target) pairs without a stored evaluation are computed; nothing is recrafted."""
    from flatbench.cell import run_cell
    from flatbench.cell.directory import CellDir
    from flatbench.entry.settings import load_settings

    if not argv or argv[0] in ("-h", "--help"):
        from flatbench.core.registry import plain

        print(plain(evaluate_main.__doc__))
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    dirs = [Path(a) for a in argv if "=" not in a]
    extra = [a for a in argv if "=" in a]
    cells = [c for d in dirs for c in (CellDir.find_crafted(d) if d.is_dir() else [])]
    if not cells:
        print(f"flatbench evaluate: error: no cells ({CellDir.OVERRIDES.as_posix()} with an adversarial set) under "
              f"{', '.join(map(str, dirs)) or 'the given directories'}", file=sys.stderr)
        return 2
    keys = {o.split("=", 1)[0].lstrip("+~") for o in extra}
    for cell in cells:
        own = [o for o in cell.overrides() if o.split("=", 1)[0].lstrip("+~") not in keys]
        old = old_override(own)
        if old:
            print(f"flatbench evaluate: error: {cell.path} was made by flatbench 0.1 ({old}); 0.2 gives it another "
                  "cell id, so its stored set cannot be extended: rerun its settings with the new names", file=sys.stderr)
            return 1
        cfg = compose_or_exit(own + extra)
        print(f"== {cell.path}")
        df = guarded(run_cell, guarded(load_settings, cfg), cell.path, mode="evaluate")
        if df is not None:
            print_table(df)
    return 0


def describe_main(argv: List[str]) -> int:
    """``flatbench describe [METHOD] [OVERRIDES]``: the loop that ``flatbench METHOD OVERRIDES``
    would run, written out from its parts with their values (nothing is loaded or run).
    Example: ``flatbench describe pgn estimator.beta=0.8 optimizer=nifgsm transforms=[dim]``."""
    if argv and argv[0] in ("-h", "--help"):
        from flatbench.core.registry import plain

        print(plain(describe_main.__doc__))
        return 0
    unknown = [a for a in argv[1:] if "=" not in a] + [a for a in argv[:1] if a.startswith("-")]
    if unknown:
        print(f"flatbench describe: error: expected METHOD then key=value overrides, got {unknown[0]!r}", file=sys.stderr)
        return 2
    print(describe_text(argv))
    return 0


def describe_text(argv: List[str]) -> str:
    """What ``flatbench describe ARGV`` prints (docs/methods.md is made of these)."""
    from flatbench.models import source_of
    from flatbench.models.lgv import describe_surrogate
    from flatbench.cell.settings import Settings
    from flatbench.entry.settings import load_settings

    method = [f"method={argv[0]}"] if argv and "=" not in argv[0] else []
    cfg = compose_or_exit(method + [a for a in argv if "=" in a])
    st: Settings = guarded(load_settings, cfg)
    s = st.cell
    attack = guarded(st.build_attack)
    tfs = ",".join(s.transforms)
    lgv = [describe_surrogate(n) + "\n" for n in s.surrogate if source_of(n).name == "lgv"]
    return (f"# flatbench {' '.join(argv)}: optimizer={s.optimizer} estimator={s.estimator} transforms=[{tfs}]\n"
            + "".join(lgv) + attack.describe())


def list_main(argv: List[str]) -> int:
    from flatbench.entry.listing import main

    return main(argv)


def plan_command(argv: List[str]) -> int:
    from flatbench.entry.planning import plan_main

    return plan_main(argv)


def export_command(argv: List[str]) -> int:
    from flatbench.cell.export import export_main

    return export_main(argv)


def fetch_weights_command(argv: List[str]) -> int:
    from flatbench.entry.fetch_weights import main

    return main(argv)


SUBCOMMANDS = {"list": list_main, "describe": describe_main, "evaluate": evaluate_main, "plan": plan_command,
               "export": export_command, "fetch-weights": fetch_weights_command}
