"""Batch packing on a device (run by scripts/gpu_check.sh): I-FGSM, MI-FGSM and
GNP crafting a set at the paper experiments' ``batch_size=25`` through flatbench's crafting stage
(``flatbench.cell.crafting.craft``, what a cell runs), packed by rule and unpacked (``chunk=25``:
one batch a forward, as before packing), against the bare forward+input-gradient limit (the best
over forwards of 25-256 images, scripts/bench.py's loop). Random-init timm surrogate, random images.

    python scripts/packing_gpu.py --device cuda --model resnet50 --size 224 --dtype bf16
    python scripts/packing_gpu.py --device cpu --smoke        # tiny sizes (the suite's dry run)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

import bench  # noqa: E402


def seconds(fn, device) -> float:
    """Wall seconds of one call of fn, the device synchronised before and after."""
    bench.sync(device)
    t0 = time.perf_counter()
    fn()
    bench.sync(device)
    return time.perf_counter() - t0


def random_set(n: int, size: int):
    """n random 3-channel images at ``size`` px with random ImageNet labels (seeded)."""
    from flatbench.data.base import ImageSet

    g = torch.Generator().manual_seed(0)
    return ImageSet("random", torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                    torch.randint(0, 1000, (n,), generator=g), [str(i) for i in range(n)], 1000)


def craft_twice(attack, data, device, batch):
    """Seconds of a first crafting run (warm-up: kernel selection, allocator, a compile) and of a
    second, timed one, through the crafting stage a cell runs; ``attack.grad_evals`` is the second's."""
    from flatbench.cell.crafting import craft

    first = seconds(lambda: craft(attack, data, data.labels, device, batch, 0, False), device)
    attack.grad_evals = 0
    return first, seconds(lambda: craft(attack, data, data.labels, device, batch, 0, False), device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    if a.smoke:
        a.model, a.size, a.images, a.batch = "resnet18", 32, 8, 2
    from flatbench.attacks import create_attack

    device = torch.device(a.device)
    search = [b for b in (25, 50, 100, 200, 256) if not a.smoke] or [2, 4, 8]
    lim = bench.limit(argparse.Namespace(model=a.model, size=a.size, search=search, dtype=a.dtype, warmup=1,
                                         repeats=1 if a.smoke else 3), device)
    print(f"# {bench.hardware(device)}; {a.model} at {a.size} px, {a.dtype}, {a.images} images at batch {a.batch}")
    print(f"limit: {lim['grad_evals_per_s']:,.1f} grad evals/s at {lim['batch']}, "
          f"{'channels_last' if lim['channels_last'] else 'contiguous'}")
    data = random_set(a.images, a.size)
    model = bench.build_model(a.model, a.size, device)
    print("| method | packed: grad evals/s | ÷ limit | chunk | unpacked (chunk=batch): grad evals/s | ÷ limit |")
    print("|---|---:|---:|---:|---:|---:|")
    for method in ("ifgsm", "mifgsm", "gnp"):
        row = []
        for chunk in ("auto", a.batch):
            attack = create_attack(method, model, eps=16 / 255, chunk=chunk, amp=None if a.dtype == "fp32" else a.dtype)
            _, timed = craft_twice(attack, data, device, a.batch)
            row.append((attack.grad_evals / timed, attack.chunk))
        print(f"| {method} | {row[0][0]:,.1f} | {row[0][0] / lim['grad_evals_per_s']:.2f} | {row[0][1]} | "
              f"{row[1][0]:,.1f} | {row[1][0] / lim['grad_evals_per_s']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
