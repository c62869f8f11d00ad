"""Write the parts' config files (conf/optimizer, conf/estimator, conf/transforms) from their
declarations; ``--check`` lists the stale ones and exits 1 instead.

    python scripts/part_configs.py           # after changing a declaration
    python scripts/part_configs.py --check
"""
import argparse
import sys

from flatbench.attacks.part_configs import stale, write
from flatbench.entry.compose import CONFIG_DIR


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="list the stale files and exit 1; write nothing")
    args = ap.parse_args()
    if args.check:
        bad = stale(CONFIG_DIR)
        print("\n".join(bad) if bad else "every part's config file agrees with its declaration")
        return 1 if bad else 0
    for f in write(CONFIG_DIR):
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
