"""Batch packing's speed: an I-FGSM cell of 512 test digits on digits-resnet
through the command line at ``batch_size=8`` (packed: the rule's chunk of 64 holds eight batches
per call), at ``batch_size=8 chunk=8`` (one batch per forward: what main did before packing), and
at ``batch_size=64``. Each round runs the three interleaved, each in a fresh cell directory and
cache; the crafting time is the cell's ``craft_seconds``; the figure is the median of --rounds.

    python scripts/packing_speed.py            # about 3 minutes on 2 cores
    python scripts/packing_speed.py --method mifgsm --rounds 2
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES = 512

ROWS = {"batch 8, packed (the default)": ["batch_size=8"],
        "batch 8, chunk=8 (unpacked, as before)": ["batch_size=8", "chunk=8"],
        "batch 64": ["batch_size=64"]}


def craft_seconds(method: str, surrogate: str, extra, tmp: Path) -> float:
    import pandas as pd

    out = tmp / f"run{len(list(tmp.iterdir()))}"
    cmd = [str(Path(sys.executable).parent / "flatbench"), f"n_images={N_IMAGES}", f"method={method}",
           f"surrogate={surrogate}", "targets=digits_small", "progress=false", f"hydra.run.dir={out}",
           f"paths.output_dir={out}-o", *extra]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
    return float(pd.read_csv(out / "results.csv")["craft_seconds"].iloc[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="ifgsm")
    p.add_argument("--surrogate", default="digits-resnet")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    times = {k: [] for k in ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for name, extra in ROWS.items():
                times[name].append(craft_seconds(a.method, a.surrogate, extra, Path(tmp)))
            print(f"round {r + 1}: " + ", ".join(f"{k}: {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    ref = statistics.median(times["batch 64"])
    print(f"\n| {a.method}, {N_IMAGES} test digits, {a.surrogate} | crafting time (median of {a.rounds}) | images/s | "
          "time ÷ batch 64's |")
    print("|---|---:|---:|---:|")
    for name, v in times.items():
        m = statistics.median(v)
        print(f"| {name} | {m:.2f} s ({' / '.join(f'{x:.2f}' for x in v)}) | {N_IMAGES / m:,.0f} | {m / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
