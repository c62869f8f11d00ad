"""Make a sweep of N cells from one real cell directory, for measuring flatbench-report at the
scale of a real study: copy i gets seed i (and its own cell id) in cell.json,
results.csv, predictions.csv and .hydra/overrides.yaml; everything else is the real cell's.

    python scripts/make_big_sweep.py CELL_DIR OUT_DIR --cells 5000
    /usr/bin/time -v flatbench-report OUT_DIR --out OUT_DIR/report
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cell", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--cells", type=int, default=5000)
    args = p.parse_args(argv)
    meta = json.loads((args.cell / "cell.json").read_text())
    results = pd.read_csv(args.cell / "results.csv")
    preds = pd.read_csv(args.cell / "predictions.csv")
    overrides = (args.cell / ".hydra" / "overrides.yaml").read_text()
    for i in range(args.cells):
        d = args.out / str(i)
        (d / ".hydra").mkdir(parents=True, exist_ok=True)
        cell_id = hashlib.sha1(f"{meta['cell_id']}-{i}".encode()).hexdigest()[:12]
        m = {**meta, "cell_id": cell_id, "semantic": {**meta["semantic"], "seed": i}}
        (d / "cell.json").write_text(json.dumps(m, indent=2))
        results.assign(cell_id=cell_id, seed=i).to_csv(d / "results.csv", index=False)
        preds.assign(cell_id=cell_id).to_csv(d / "predictions.csv", index=False)
        (d / ".hydra" / "overrides.yaml").write_text(overrides + f"- seed={i}\n")
    shutil.copy(args.cell / "cell.json", args.out / "source_cell.json")
    print(f"{args.cells} cells from {args.cell} in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
