"""The cell part of the GPU check (scripts/gpu_check.sh): a random-init PGN cell through the
command line, on generated ImageNet-size images, as a user would run it on a GPU machine.

1. ``flatbench plan`` projects the 1,000-image cell (its measured rate or a ~1 s measurement).
2. The cell runs with as many images as fit the time left (all 1,000 when they do); the rate it
   measured projects the 1,000-image cell, and the output says which of the two a figure is.
3. The same cell again, into its own cache: are the images bit-identical on this device?
4. With 2 or more GPUs: the same cell under ``torchrun --nproc-per-node=2``, compared with 1 (the
   CPU dry run takes this path with 2 gloo processes).

Writes ``cell.csv`` (one row per run) and prints one line per figure, for docs/benchmarks.md.
    python scripts/gpu_check_cell.py --out outputs/gpu_check --budget-s 300
    python scripts/gpu_check_cell.py --out /tmp/c --device cpu --smoke      # the dry run
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
# Through the interpreter, not the entry points: a GPU machine may run this from a plain checkout
# on PYTHONPATH (scripts/gpu_check.sh), where `flatbench` is not installed as a command.
FLATBENCH = [sys.executable, "-m", "flatbench"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def make_images(root: Path, n: int, size: int) -> None:
    """n smooth random RGB images in TransferAttack's layout (images/, labels.csv)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["filename,label"]
    for i in range(n):
        rng = np.random.default_rng(i)
        base = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
        Image.fromarray(base).resize((size, size), Image.BILINEAR).save(root / "images" / f"{i:04d}.png")
        rows.append(f"{i:04d}.png,{(37 * i) % 1000}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def flatbench(args, env, log) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    log.write(" ".join(map(str, args)) + "\n" + p.stdout + p.stderr)
    if p.returncode != 0:
        sys.exit(f"gpu_check_cell: failed ({p.returncode}): {' '.join(map(str, args))}\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget-s", type=float, default=300.0, help="seconds this part may take (default 300)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (the CPU dry run of the suite)")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    out = a.out.resolve()
    if a.smoke:
        full, size, batch, model = 8, 64, 4, "resnet18"
        extra = ["steps=2", "estimator.n_samples=2"]
    else:
        full, size, batch, model = 1000, 224, 25, "resnet50"
        extra = []   # PGN's defaults: T = 10, N = 20, zeta = 3 eps, beta = 0.5
    data = out / "cell_data"
    if not (data / "labels.csv").exists() or len(list((data / "images").glob("*.png"))) != full:
        shutil.rmtree(data, ignore_errors=True)
        make_images(data, full, size)
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    common = ["method=pgn", "data=transferattack", f"data.root={data}", f"data.image_size={size}", f"surrogate={model}",
              "pretrained=false", "targets=[]", f"+targets.{model}={{model: {model}, role: normal}}", f"device={a.device}",
              f"batch_size={batch}", "progress=false", "logger=csv", *extra]
    log = open(out / "cell_log.txt", "w")
    # 1. The plan of the whole cell (its own cache: no rate on file from an earlier run).
    flatbench([*FLATBENCH, "plan", *common, f"n_images={full}", f"paths.cache_dir={out / 'cell_cache_plan'}",
               "--csv", out / "cell_plan.csv"], env, log)
    with open(out / "cell_plan.csv") as f:
        plan = next(csv.DictReader(f))
    planned_s, planned_evals = float(plan["projected_s"]), int(plan["grad_evals"])
    print(f"cell: plan of the {full}-image PGN cell ({model}, {size}x{size}, {a.device}): {planned_evals:,} gradient "
          f"evaluations, projected {planned_s:.0f} s ({plan['rate_source']})", flush=True)
    gpus = torch.cuda.device_count() if a.device.startswith("cuda") else 0
    # The dry run takes the torchrun path too (2 gloo processes on the CPU), so that it is tried here.
    two = gpus >= 2 or (a.smoke and a.device == "cpu")
    runs = 3 if two else 2
    left = a.budget_s - (time.perf_counter() - t_start)
    # Each run also pays its startup and evaluation: keep a third of the time for them.
    fits = int(full * (left * 2 / 3) / runs / max(planned_s, 1e-9))
    n = full if fits >= full else max(batch, fits // batch * batch)
    rows = []

    def run(label, args, cache):
        d = out / f"cell_{label}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        wall = flatbench([*args, *common, f"n_images={n}", f"hydra.run.dir={d}", f"paths.cache_dir={cache}"], env, log)
        with open(d / "results.csv") as f:
            r = next(csv.DictReader(f))
        rate = int(r["grad_evals"]) / float(r["craft_seconds"])
        rows.append({"run": label, "device": a.device, "model": model, "image_size": size, "n_images": n,
                     "grad_evals": int(r["grad_evals"]), "craft_seconds": round(float(r["craft_seconds"]), 2),
                     "wall_seconds": round(wall, 2), "grad_evals_per_s": round(rate, 1),
                     f"projected_{full}_images_s": round(planned_evals / rate, 1), "chunk": r["chunk"],
                     "memory_format": r["memory_format"]})
        return d

    from flatbench.cell.store import load_adv

    first = run("first", FLATBENCH, out / "cell_cache_first")
    second = run("second", FLATBENCH, out / "cell_cache_second")
    x1, x2 = load_adv(first / "adv.safetensors")[0], load_adv(second / "adv.safetensors")[0]
    differ = int((x1 != x2).sum())
    rows[0]["identical_to_first"] = rows[1]["identical_to_first"] = differ == 0
    r = rows[0]
    what = "measured" if n == full else f"projected from {n} images at the cell's measured rate"
    print(f"cell: {n} images crafted in {r['craft_seconds']:.1f} s ({r['grad_evals_per_s']:,.0f} gradient evaluations/s, "
          f"chunk {r['chunk']}, {r['memory_format']}); {full} images: {r[f'projected_{full}_images_s']:.0f} s ({what}); "
          f"wall {r['wall_seconds']:.1f} s with startup and evaluation", flush=True)
    print(f"cell: determinism: the same cell twice, 8-bit pixels differing: {differ} of {x1.numel()}", flush=True)
    if two:
        ddp = run("torchrun2", [*TORCHRUN, "--nproc-per-node=2", "--master-port=29533", "-m", "flatbench"],
                  out / "cell_cache_torchrun2")
        x3 = load_adv(ddp / "adv.safetensors")[0]
        rows[2]["identical_to_first"] = bool(torch.equal(x1, x3))
        print(f"cell: torchrun, 2 {'GPUs' if gpus >= 2 else 'CPU processes'}: {rows[2]['craft_seconds']:.1f} s crafting "
              f"({rows[0]['craft_seconds'] / rows[2]['craft_seconds']:.2f}x one process); 8-bit pixels differing from one "
              f"process: {int((x1 != x3).sum())}", flush=True)
    else:
        print(f"cell: torchrun skipped: {gpus} GPU(s) on this machine", flush=True)
    with open(out / "cell.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
