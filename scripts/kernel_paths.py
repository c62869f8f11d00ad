"""How much the CPU's kernel paths move the default table, and what pinning them costs.

Runs the same sweep (by default the digits-cnn rows of the README's table that its test reruns)
once per *setting* of the kernel-selection variables, each in a fresh sweep directory and a fresh
cache (nothing is reused between settings), and compares every setting with the first one:

- ``same_images``: how many cells stored bit-identical adversarial images;
- ``max_diff``: the largest |ASR difference| over every (surrogate, attack, target) entry, in
  points, and ``entries_diff``: how many entries differ at all;
- ``seconds``: the sweep's wall time (crafting, evaluation and the process starts);
- ``entries_off_readme`` and ``max_off_readme``: the same against the README's default table (beyond
  its one-decimal rounding): on a second CPU type, ``pinned`` should show 0 and 0.

A setting is ``NAME`` (one of :data:`SETTINGS`) or ``NAME:VAR=VALUE,VAR=VALUE``. ``FLATBENCH_KERNELS``
is the command line's own pinning (flatbench/core/kernels.py): the settings below set it to ``native``
so that the variables they name are the only ones in effect.

    .venv/bin/python scripts/kernel_paths.py                          # every setting of SETTINGS
    .venv/bin/python scripts/kernel_paths.py --settings native pinned --full   # the whole README table

Prints a Markdown table; ``--csv`` writes the per-entry ASRs of every setting.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

NATIVE = {"FLATBENCH_KERNELS": "native"}
SETTINGS: Dict[str, Dict[str, str]] = {
    "pinned": {"FLATBENCH_KERNELS": "avx2"},        # the command line's default (flatbench/core/kernels.py)
    "native": dict(NATIVE),                         # whatever each library picks for this CPU
    "aten_default": {**NATIVE, "ATEN_CPU_CAPABILITY": "default"},
    "aten_avx2": {**NATIVE, "ATEN_CPU_CAPABILITY": "avx2"},
    "onednn_sse41": {**NATIVE, "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "onednn_avx": {**NATIVE, "ONEDNN_MAX_CPU_ISA": "AVX"},
    "onednn_avx2": {**NATIVE, "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl_compatible": {**NATIVE, "MKL_CBWR": "COMPATIBLE"},
    "mkl_avx2": {**NATIVE, "MKL_CBWR": "AVX2"},
    "threads_1": {**NATIVE, "OMP_NUM_THREADS": "1"},
    "portable": {"FLATBENCH_KERNELS": "default"},    # the paths every x86-64 CPU has
}
README_CELLS = ["surrogate=digits-cnn", "method=ifgsm,mifgsm,gnp,gnp_ta"]


def parse_setting(text: str) -> Tuple[str, Dict[str, str]]:
    name, _, rest = text.partition(":")
    if not rest:
        if name not in SETTINGS:
            raise SystemExit(f"kernel_paths: unknown setting {name!r}; choose from {', '.join(SETTINGS)} "
                             "or write NAME:VAR=VALUE,...")
        return name, SETTINGS[name]
    env = dict(NATIVE)
    for pair in rest.split(","):
        var, eq, value = pair.partition("=")
        if not eq:
            raise SystemExit(f"kernel_paths: {pair!r} in {text!r} is not VAR=VALUE")
        env[var] = value
    return name, env


def run_sweep(env: Dict[str, str], overrides: List[str], work: Path) -> float:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "FLATBENCH_KERNELS")}
    full_env = {**clean, "WANDB_MODE": "offline", **env}
    cmd = [str(BIN / "flatbench"), "-m", "experiment=digits", *overrides, "progress=false",
           f"hydra.sweep.dir={work / 'sweep'}", f"paths.cache_dir={work / 'cache'}"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=work, env=full_env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"kernel_paths: {' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return seconds


def cells(work: Path) -> pd.DataFrame:
    return pd.concat(pd.read_csv(f) for f in sorted((work / "sweep").glob("*/results.csv")))


def images(work: Path) -> Dict[str, "torch.Tensor"]:
    """The stored adversarial set (uint8) of each cell, by cell id."""
    from flatbench.cell.store import load_adv

    out = {}
    for f in (work / "sweep").glob("*/results.csv"):
        out[str(pd.read_csv(f)["cell_id"].iloc[0])] = load_adv(f.parent / "adv.safetensors")[0]
    return out


def same(a, b) -> bool:
    return b is not None and a.shape == b.shape and bool((a == b).all())


def readme_table() -> pd.Series:
    """The README's default table, as ASR by (surrogate, attack, target)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## The default experiment and its table", 1)[1].split("###", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip().rstrip("*") for c in ln.strip("|").split("|")] for ln in lines[1:]]
    wide = pd.DataFrame(rows, columns=head)
    targets = [c for c in head[head.index("decay") + 1:] if c != "black-box mean"]
    long = wide.melt(id_vars=["surrogate", "attack"], value_vars=targets, var_name="target", value_name="asr")
    return long.astype({"asr": float}).set_index(["surrogate", "attack", "target"])["asr"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), help="first one is the reference")
    ap.add_argument("--full", action="store_true", help="the whole README table (both surrogates, all five methods)")
    ap.add_argument("--csv", type=Path, help="write every setting's ASR per (surrogate, attack, target)")
    args = ap.parse_args(argv)
    overrides = [] if args.full else README_CELLS
    settings = [parse_setting(s) for s in args.settings]
    keys = ["surrogate", "attack", "target"]
    rows, tables, ref_images = [], [], None
    readme = readme_table()
    with tempfile.TemporaryDirectory(prefix="kernel_paths_") as tmp:
        for name, env in settings:
            work = Path(tmp) / name
            work.mkdir()
            seconds = run_sweep(env, overrides + ["save_images=true"], work)
            df = cells(work)[keys + ["asr"]].set_index(keys)["asr"].rename(name)
            imgs = images(work)
            if not tables:
                ref, ref_images = df, imgs
            diff = (df - ref).abs()
            rows.append({"setting": name, "variables": " ".join(f"{k}={v}" for k, v in env.items()) or "(none)",
                         "seconds": round(seconds, 1),
                         "same_images": f"{sum(same(b, imgs.get(c)) for c, b in ref_images.items())}/{len(ref_images)}",
                         "pixels_diff": sum(int((b != imgs[c]).sum()) for c, b in ref_images.items() if c in imgs),
                         "entries_diff": int((diff > 1e-9).sum()), "max_diff": round(float(diff.max()), 2)})
            # Against the README's table (one decimal): entries further than its rounding.
            vs = (df - readme.reindex(df.index)).abs()
            rows[-1]["entries_off_readme"] = int((vs > 0.05 + 1e-9).sum())
            rows[-1]["max_off_readme"] = round(float(vs.max()), 2)
            tables.append(df)
            print(f"kernel_paths: {name}: {rows[-1]}", file=sys.stderr, flush=True)
    head = list(rows[0])
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(r[h]) for h in head) + " |")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(tables, axis=1).reset_index().to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
