"""Collect the testbed's LGV sets (flatbench.models.lgv_digits.RECIPE) and pin them, or scan learning rates.

    python scripts/lgv_collect.py                      # all three runs, into flatbench/models/zoo
    python scripts/lgv_collect.py digits-resnet-lgv-2 --out DIR
    python scripts/lgv_collect.py --scan 0.005,0.01,0.015,0.02,0.03,0.05

Prints each collected model's test accuracy and the file's size and SHA-256; ``--scan`` prints, for every
learning rate and SGD seed 0, 1, 2, the lowest accuracy of a collected model and whether every one keeps 95%
of the base's (the collection's criterion; nothing is written).
"""
import argparse
from pathlib import Path

from flatbench.models.lgv_digits import KEEP, RUNS, build_pinned, scan
from flatbench.models.testbed import PINNED_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"the sets to collect (default: all; choices: {', '.join(RUNS)})")
    ap.add_argument("--out", type=Path, default=PINNED_DIR)
    ap.add_argument("--scan", default=None, metavar="RATES", help="comma-separated learning rates to scan instead")
    args = ap.parse_args()
    unknown = [n for n in args.names if n not in RUNS]
    if unknown:
        ap.error(f"unknown set {unknown[0]!r}; choices: {', '.join(RUNS)}")
    if args.scan:
        print(f"lr     seed  lowest accuracy of a model  keeps {KEEP:.0%} of the base's")
        for r in scan([float(x) for x in args.scan.split(",")]):
            print(f"{r['lr']:<6g} {r['seed']:<5d} {r['min_acc']:<26.1f} {'yes' if r['keeps'] else 'no'}   {r['test_acc']}",
                  flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(RUNS):
        meta = build_pinned(name, args.out)
        size = (args.out / f"{name}.safetensors").stat().st_size
        print(f"{name}: {meta['recipe']['k']} collected models, test accuracy {meta['test_acc']}, "
              f"{size / 1e6:.2f} MB, sha256 {meta['sha256'][:16]}", flush=True)


if __name__ == "__main__":
    main()
