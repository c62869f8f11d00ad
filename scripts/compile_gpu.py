"""torch.compile and CUDA graphs against eager (run by scripts/gpu_check.sh):
can compiling the surrogate lift the bare limit itself (4,508 gradient evaluations/s for ResNet-50
bf16 on the H200, eager), and does the gain reach a cell?

Rows, each timed after its own warm-up (the compile time is printed beside it, never mixed in):
- the bare forward+input-gradient loop at the eager limit's batch and memory format
  (scripts/bench.py's loop and search), the model eager, ``torch.compile``d (inductor's default),
  and compiled with ``mode="reduce-overhead"`` (inductor with CUDA graphs; CUDA only);
- I-FGSM and PGN crafting a set at the paper experiments' ``batch_size=25`` through flatbench's
  crafting stage (``flatbench.cell.crafting.craft``, what a ``compile=true`` cell runs: it hands the
  attack ``torch.compile(surrogate)``), chunk and packing by rule.

A variant that fails (a graph break the compiler refuses, CUDA graphs' overwritten outputs) prints
its error in its row and the traceback on stderr: that it fails is the finding. Rows stop being
started once ``--budget-s`` is spent (compiling ResNet-50 takes a minute or more a variant).

    python scripts/compile_gpu.py --device cuda --model resnet50 --size 224 --dtype bf16
    python scripts/compile_gpu.py --device cpu --smoke     # tiny sizes, aot_eager (the suite's dry run)
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

import bench  # noqa: E402
from packing_gpu import craft_twice, random_set, seconds  # noqa: E402


def variants(device, smoke: bool):
    """(label, model -> model): eager, then the compiled variants this device has."""
    if smoke:   # the script's own logic end to end, without a C++ compiler's minutes
        return [("eager", lambda m: m), ("compile (aot_eager)", lambda m: torch.compile(m, backend="aot_eager"))]
    out = [("eager", lambda m: m), ("compile", lambda m: torch.compile(m))]
    if device.type == "cuda":
        out.append(("compile reduce-overhead (CUDA graphs)", lambda m: torch.compile(m, mode="reduce-overhead")))
    return out


def bare_row(wrap, a, lim, device) -> str:
    cl = bool(lim["channels_last"])
    model = wrap(bench.build_model(a.model, a.size, device, channels_last=cl))
    x, y = bench.inputs(a.model, a.size, int(lim["batch"]), device)
    loop = lambda: bench.bare_loop(model, x, y, device, a.dtype, cl)   # noqa: E731
    compile_s = seconds(loop, device)
    r = bench.timed(loop, device, warmup=2, repeats=a.repeats)
    rate = r["grad_evals"] / r["seconds"]
    return f"{rate:,.1f} | {rate / lim['grad_evals_per_s']:.2f} | {compile_s:.1f} s"


def craft_row(method, wrap, a, data, device, limit_rate) -> str:
    from flatbench.attacks import create_attack

    model = wrap(bench.build_model(a.model, a.size, device))
    attack = create_attack(method, model, eps=16 / 255, amp=None if a.dtype == "fp32" else a.dtype,
                           **({"steps": 2, **({"n_samples": 2} if method == "pgn" else {})} if a.smoke else {}))
    first_s, timed_s = craft_twice(attack, data, device, a.batch)
    rate = attack.grad_evals / timed_s
    return (f"{rate:,.1f} | {rate / limit_rate:.2f} | first run {first_s:.1f} s, timed run {timed_s:.1f} s "
            f"({len(data)} images, chunk {attack.chunk})")


def guarded(label, fn, start, budget_s) -> str:
    if time.perf_counter() - start > budget_s:
        return "not run (budget spent) | | "
    try:
        return fn()
    except Exception as e:   # the measurement is whether it runs: say so in the row, keep the traceback
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:120]
        return f"failed: {type(e).__name__}: {first} | | "


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--images", type=int, default=500, help="I-FGSM's set")
    p.add_argument("--pgn-images", type=int, default=100, help="PGN's set (the first images of I-FGSM's)")
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=180.0, help="no row is started after this many seconds")
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    if a.smoke:
        a.model, a.size, a.images, a.pgn_images, a.batch, a.repeats = "resnet18", 32, 4, 4, 2, 1
    start = time.perf_counter()
    device = torch.device(a.device)
    search = [2, 4] if a.smoke else [25, 50, 100, 200, 256]
    lim = bench.limit(argparse.Namespace(model=a.model, size=a.size, search=search, dtype=a.dtype, warmup=1,
                                         repeats=a.repeats), device)
    print(f"# {bench.hardware(device)}; {a.model} at {a.size} px, {a.dtype}")
    print(f"eager limit: {lim['grad_evals_per_s']:,.1f} grad evals/s at {lim['batch']}, "
          f"{'channels_last' if lim['channels_last'] else 'contiguous'}")
    data = random_set(a.images, a.size)
    print("| workload | model | grad evals/s | ÷ eager limit | first call (the compile) |")
    print("|---|---|---:|---:|---|")
    for label, wrap in variants(device, a.smoke):
        row = guarded(label, lambda: bare_row(wrap, a, lim, device), start, a.budget_s)
        print(f"| bare, batch {lim['batch']} | {label} | {row} |", flush=True)
        torch._dynamo.reset()   # each variant compiles from scratch, its time its own
    for method, n in (("ifgsm", a.images), ("pgn", min(a.pgn_images, a.images))):
        part = data.subset(n)
        for label, wrap in variants(device, a.smoke):
            row = guarded(label, lambda: craft_row(method, wrap, a, part, device, lim["grad_evals_per_s"]), start,
                          a.budget_s)
            print(f"| {method} crafting, batch {a.batch} | {label} | {row} |", flush=True)
            torch._dynamo.reset()
    print(f"compile_gpu: done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
