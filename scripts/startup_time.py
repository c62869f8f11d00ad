"""Time from a cell's start to its first batch: what every SLURM requeue pays again.

    python scripts/startup_time.py [--repeats 3]

Runs two small cells as a user would (the `flatbench` next to this Python) and reads the
timestamp of the log line written just before crafting: digits with its 6-model zoo, and
experiment=transferattack_rn50 with its 10 random-init ImageNet targets on generated images
(offline). Prints the best of --repeats for each, and the whole run's wall time.
"""
import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_layouts  # noqa: E402  (generated PNGs in each data layout)

CASES = {
    "digits, 6 targets": ["n_images=8"],
    "ImageNet random-init, transferattack zoo, 10 targets": [
        "experiment=transferattack_rn50", "method=mifgsm", "pretrained=false", "n_images=4", "steps=1", "batch_size=4",
        "targets.RS.defense.n=4"],
}
LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[flatbench\]\[INFO\] - cell \w+: .* on .*images of")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="flatbench-startup-"))
    lay = make_layouts(root / "data", n=8)
    env = dict(os.environ, FLATBENCH_DATA=str(lay["root"]), HF_HUB_OFFLINE="1")
    exe = Path(sys.executable).parent / "flatbench"
    for name, extra in CASES.items():
        starts, walls = [], []
        for rep in range(args.repeats):
            tag = f"{len(starts)}-{abs(hash(name))}"
            t0 = time.time()
            run = subprocess.run([str(exe), *extra, "progress=false", f"hydra.run.dir={root}/run-{tag}",
                                  f"paths.cache_dir={root}/cache-{tag}"], env=env, cwd=root, capture_output=True, text=True)
            walls.append(time.time() - t0)
            if run.returncode:
                print(run.stderr[-2000:], file=sys.stderr)
                return 1
            stamp = next(m.group(1) for m in map(LINE.match, (run.stdout + run.stderr).splitlines()) if m)
            starts.append(datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() - t0)
        print(f"{name}: start to crafting {min(starts):.1f} s, whole run {min(walls):.1f} s (best of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
