"""``flatbench plan``'s command line: arguments, the printed table, the CSV."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

from flatbench.entry.planning.cost import MARGIN, CellCost, cost_cells, totals


def _fmt_s(v: float) -> str:
    return f"{v:.1f} s" if v < 120 else (f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.2f} h")


WIDTH = 100   # the printed table's width without --wide


def render(cells: List[CellCost], tot: Dict[str, Any], wide: bool = False) -> str:
    import pandas as pd

    df = pd.DataFrame([asdict(c) for c in cells])
    if wide:
        cols = ["knob"] if (df["knob"] != "").any() else []
        show = df[["cell", "overrides", "cell_id", "status", *cols, "per_image", "grad_evals", "eval_passes", "craft_s",
                   "eval_s", "projected_s", "rate_source"]].rename(
            columns={"craft_s": "craft_s (proj.)", "eval_s": "eval_s (proj.)", "projected_s": "total_s (proj.)"})
        lines = [show.to_string(index=False, max_colwidth=60), ""]
    else:
        lines = _narrow(df)
    lines += _footer(tot)
    return "\n".join(lines)


def _narrow(df) -> List[str]:
    """The table in WIDTH columns: each cell's overrides, status, cost and projected time; the rates'
    sources once each below it, by a short key (the rest: --wide, or the CSV)."""
    import textwrap

    sources = list(dict.fromkeys(df["rate_source"]))
    key = {s: f"r{i + 1}" for i, s in enumerate(sources)}
    show = df.assign(rate=df["rate_source"].map(key), total=df["projected_s"].map(_fmt_s))
    knob = ["knob"] if (df["knob"] != "").any() else []   # what budget=B set: short, and the point of such a plan
    show = show[["cell", "overrides", "status", *knob, "grad_evals", "total", "rate"]].rename(
        columns={"grad_evals": "grad evals", "total": "projected"})
    room = WIDTH - len(show.drop(columns="overrides").to_string(index=False).splitlines()[0]) - 2
    show["overrides"] = [o if len(o) <= room else o[:max(8, room) - 3] + "..." for o in show["overrides"]]
    lines = show.to_string(index=False).splitlines() + [""]
    for s in sources:
        lines += textwrap.wrap(f"{key[s]}: {s}", WIDTH, subsequent_indent="    ")
    return lines + ["(every column: flatbench plan --wide, or --csv FILE)", ""]


def _footer(tot: Dict[str, Any]) -> List[str]:
    import textwrap

    lines = []
    if "trials" in tot:
        lines.append(f"an Optuna search: the rows are the {tot['cells']} corners of its space (each interval's ends, "
                     f"each range's and choice's values), not trials; {tot['trials']} trials project to "
                     f"{_fmt_s(tot['projected_s'])} at the corners' mean ({tot['device_hours']:.3f} device-hours), between "
                     f"{_fmt_s(tot['trials_low_s'])} (every trial at the cheapest corner) and {_fmt_s(tot['trials_high_s'])} "
                     "(every trial at the dearest); a projection, flatness=on and W&B not in it")
    else:
        lines.append(f"cells: {tot['cells']} ({tot['cells_left']} with work left); gradient evaluations: "
                     f"{tot['grad_evals']:,}; projected: {_fmt_s(tot['projected_s'])} = {tot['device_hours']:.3f} "
                     "device-hours on this device (a projection from the rates named per cell; flatness=on and W&B "
                     "are not in it)")
    lines.append("how sure: a rate on file from a cell is the speed that cell really crafted at; one measured now is "
                 "the best of short timings, and another job on the machine (see each rate's load against its CPUs) "
                 "makes it slower than the machine and the projection longer than a quiet run would take")
    lines += [
             f"suggested hydra.launcher.timeout_min={tot['timeout_min']}: the longest cell "
             f"({_fmt_s(tot['longest_s'])}) x {MARGIN:g} margin + {tot['startup_s']:.1f} s of startup, paid again on "
             "each requeue"]
    return [w for line in lines for w in (textwrap.wrap(line, WIDTH) or [""])]


def plan_main(argv: List[str]) -> int:
    """``flatbench plan [-m] [--wide] [--csv FILE] [OVERRIDES]``: the cost of a run or a sweep before it
    runs (see :mod:`flatbench.entry.planning`)."""
    import pandas as pd

    from flatbench.entry.errors import guarded

    if argv and argv[0] in ("-h", "--help"):
        from flatbench.entry.planning import __doc__ as usage

        from flatbench.core.registry import plain

        print(plain(usage))
        return 0
    multirun = any(a in ("-m", "--multirun") for a in argv)
    csv: Optional[Path] = None
    wide = "--wide" in argv
    rest = []
    it = iter(a for a in argv if a not in ("-m", "--multirun", "--wide"))
    for a in it:
        if a == "--csv":
            csv = Path(next(it, ""))
        elif a.startswith("--csv="):
            csv = Path(a.split("=", 1)[1])
        elif a.startswith("-"):
            print(f"flatbench plan: error: unknown option {a!r} (valid: -m, --wide, --csv FILE)", file=sys.stderr)
            return 2
        else:
            rest.append(a)
    cells, info = guarded(cost_cells, rest, multirun, composing=True, say=lambda m: print(m, file=sys.stderr))
    tot = totals(cells, info["startup_s"], info.get("search"))
    print(render(cells, tot, wide))
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([asdict(c) for c in cells]).to_csv(csv, index=False)
        print(f"csv: {csv}")
    return 0
