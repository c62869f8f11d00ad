"""Collect the LGV snapshots of digits-resnet (flatbench.models.lgv.RECIPE) and pin them.

    python scripts/lgv_snapshots.py            # into flatbench/models/zoo (the pinned set)
    python scripts/lgv_snapshots.py --out DIR  # elsewhere

Prints each snapshot's test accuracy and the file's size and SHA-256.
"""
import argparse
from pathlib import Path

from flatbench.models.lgv import PINNED_NAME, build_pinned
from flatbench.models.testbed import PINNED_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=PINNED_DIR)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    meta = build_pinned(args.out)
    size = (args.out / f"{PINNED_NAME}.safetensors").stat().st_size
    print(f"{PINNED_NAME}: {meta['recipe']['k']} snapshots, test accuracy {meta['test_acc']}, "
          f"{size / 1e6:.2f} MB, sha256 {meta['sha256'][:16]}")


if __name__ == "__main__":
    main()
