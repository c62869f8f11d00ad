"""Benchmark: how close flatbench's attacks get to the hardware's gradient throughput.

A gradient evaluation is one image through one forward and one input-gradient backward of
the surrogate. For a surrogate, resolution, batch, device and dtype this script measures

1. the limit: the best throughput of a bare loop (forward, then torch.autograd.grad w.r.t.
   the input), searched over batch sizes (up to N·B, the most images PGN puts in one forward) and
   memory formats (contiguous, channels_last);
2. each attack (I-FGSM, MI-FGSM, PGN, GNP, PGN+DIM+TIM, GRA, MEF, RAP, ANDA, BSR, SIA and CWA at
   their defaults; RAP from its first step; CWA on an ensemble of two copies of the surrogate, its
   rate counted in passes of one model: an ensemble pass is K of them) twice: as users
   get it (``create_attack`` with no performance arguments, the "default" columns) and with
   the settings given here (--chunk, and the
   limit's memory format), in gradient evaluations per second, with its peak memory;
3. the sequential baselines: PGN, GRA and MEF written the way the public reference code does
   them, one forward/backward of the image batch per neighbour (labelled "baseline
   (sequential PGN)", ...); each method's speed-up is over the baseline of its estimator.

It prints: method, images/s, grad evals/s, efficiency (2 / 1), the default's grad evals/s and
efficiency and its one-off measurement time, speed-up over the baseline
(2 / 3, PGN-family rows) and peak memory; each figure is the median of --repeats timed runs
after a warm-up. It also writes a CSV.

    python scripts/bench.py --model digits-cnn                        # make bench runs the set below
    python scripts/bench.py --model resnet18 --size 224 --batch 8
    python scripts/bench.py --model resnet50 --size 224 --batch 25 --device cuda --dtype bf16
    python scripts/bench.py --smoke                                   # tiny sizes, one repeat (the test suite)
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

METHODS = ["ifgsm", "mifgsm", "pgn", "gnp", "pgn_dim_tim", "gra", "mef", "rap", "anda", "bsr", "sia", "cwa"]
# Timed in the phase that costs: RAP from its first step (its late start is step 100 of 400).
BENCH_KWARGS = {"rap": {"late_start": 0}}


# ---------------------------------------------------------------- memory

def _proc_kib(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block: CUDA max allocated, or on Linux CPU the resident-set peak
    (VmHWM, reset through /proc/self/clear_refs). Reported in MiB."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:
            peak = _proc_kib("VmHWM")
            self.mib = peak / 1024 if peak else float("nan")
        return False


# ---------------------------------------------------------------- models and data

def build_model(name: str, size: int, device: torch.device, channels_last: bool = False) -> torch.nn.Module:
    """A frozen surrogate taking [0,1] images: a testbed model, or a random-init timm model."""
    from flatbench.models import TESTBED, load_model

    if name in TESTBED:
        model = load_model(name, progress=False)
    else:
        model = load_model(name, pretrained=False, input_size=size)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def inputs(name: str, size: int, batch: int, device: torch.device):
    from flatbench.models import TESTBED

    channels = 1 if name in TESTBED else 3
    classes = 10 if name in TESTBED else 1000
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    return x, y


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], int], device, warmup: int, repeats: int) -> Dict[str, float]:
    """Median seconds and the grad evals of one call of fn (which returns its grad evals)."""
    for _ in range(warmup):
        fn()
    times, evals = [], 0
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        evals = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "grad_evals": evals}


def autocast(device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    from contextlib import nullcontext

    return nullcontext()


# ---------------------------------------------------------------- 1. the limit

def bare_loop(model, x, y, device, dtype: str, channels_last: bool) -> int:
    xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    xx = xx.detach().requires_grad_(True)
    with autocast(device, dtype):
        loss = F.cross_entropy(model(xx).float(), y, reduction="sum")
    torch.autograd.grad(loss, xx)
    return x.shape[0]


def limit(args, device) -> Dict[str, object]:
    best = {"grad_evals_per_s": 0.0}
    rows = []
    for cl in (False, True):
        model = build_model(args.model, args.size, device, channels_last=cl)
        for b in args.search:
            x, y = inputs(args.model, args.size, b, device)
            r = timed(lambda: bare_loop(model, x, y, device, args.dtype, cl), device, args.warmup, args.repeats)
            rate = r["grad_evals"] / r["seconds"]
            rows.append({"batch": b, "channels_last": cl, "grad_evals_per_s": rate})
            if rate > best["grad_evals_per_s"]:
                best = {"batch": b, "channels_last": cl, "grad_evals_per_s": rate}
    best["search"] = rows
    return best


# ---------------------------------------------------------------- 2. flatbench's attacks

def flatbench_attack(method: str, model, args, chunk, channels_last: bool):
    from flatbench.attacks import create_attack

    return create_attack(method, model, eps=args.eps / 255, steps=args.steps, chunk=chunk,
                         memory_budget_mb=args.memory_budget_mb, amp=args.dtype if args.dtype != "fp32" else None,
                         channels_last=channels_last, **BENCH_KWARGS.get(method, {}))


def bench_surrogate(method: str, model):
    """The surrogate a method is timed on: CWA needs an ensemble (two copies of the model, K = 2). Its
    grad_evals count single-model passes (2K a step), the unit of every other row, so its efficiency
    reads as theirs."""
    from flatbench.attacks import METHODS as PRESETS
    from flatbench.models import Ensemble

    return Ensemble([model, model]) if PRESETS[method][1] == "cwa" else model


def run_attack(attack, x, y) -> int:
    attack.grad_evals = 0
    attack(x, y, seed=0)
    return attack.grad_evals


# ---------------------------------------------------------------- 3. the sequential baseline

def baseline_pgn(model, x, y, eps, steps, n=20, zeta=3.0, beta=0.5, decay=1.0, dtype="fp32", device=None) -> int:
    """Baseline (sequential PGN): the public reference implementations' loop, one forward and
    backward of the image batch per neighbour and per gradient (2·N per step)."""
    alpha = eps / steps
    delta = torch.zeros_like(x)
    momentum = torch.zeros_like(x)
    evals = 0

    def grad(z):
        z = z.detach().requires_grad_(True)
        with autocast(device or x.device, dtype):
            loss = F.cross_entropy(model(z).float(), y)
        return torch.autograd.grad(loss, z)[0]

    for _ in range(steps):
        avg = torch.zeros_like(x)
        for _ in range(n):
            x_near = x + delta + torch.zeros_like(x).uniform_(-eps * zeta, eps * zeta)
            g1 = grad(x_near)
            x_star = x_near - alpha * g1 / g1.abs().mean(dim=(1, 2, 3), keepdim=True)
            g2 = grad(x_star)
            avg += (1 - beta) * g1 + beta * g2
            evals += 2 * x.shape[0]
        g = avg / n
        momentum = decay * momentum + g / g.abs().mean(dim=(1, 2, 3), keepdim=True)
        delta = (delta + alpha * momentum.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return evals


def _sequential_grad(model, y, dtype, device):
    def grad(z):
        z = z.detach().requires_grad_(True)
        with autocast(device or z.device, dtype):
            loss = F.cross_entropy(model(z).float(), y)
        return torch.autograd.grad(loss, z)[0]
    return grad


def _mi_step(x, delta, momentum, g, alpha, eps, decay=1.0, step=None):
    momentum = decay * momentum + g / g.abs().mean(dim=(1, 2, 3), keepdim=True)
    delta = (delta + (alpha if step is None else step) * momentum.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1) - x, momentum


def baseline_gra(model, x, y, eps, steps, n=20, zeta=3.5, eta=0.94, dtype="fp32", device=None) -> int:
    """Baseline (sequential GRA): TransferAttack's gra.py loop, the current gradient and then one
    forward and backward of the image batch per neighbour (1 + N per step)."""
    alpha, grad = eps / steps, _sequential_grad(model, y, dtype, device)
    delta, momentum, M, evals = torch.zeros_like(x), torch.zeros_like(x), torch.full_like(x, 1 / eta), 0
    for _ in range(steps):
        g = grad(x + delta)
        avg = torch.zeros_like(x)
        for _ in range(n):
            avg += grad(x + delta + torch.zeros_like(x).uniform_(-zeta * eps, zeta * eps))
        avg = avg / n
        s = F.cosine_similarity(g.flatten(1), avg.flatten(1)).view(-1, 1, 1, 1)
        last = momentum.sign()
        cur = s * g + (1 - s) * avg
        momentum = momentum + cur / cur.abs().mean(dim=(1, 2, 3), keepdim=True)
        same = (last == momentum.sign()).float()
        M = M * (same + (1 - same) * eta)
        delta = ((delta + alpha * M * momentum.sign()).clamp(-eps, eps) + x).clamp(0, 1) - x
        evals += (1 + n) * x.shape[0]
    return evals


def baseline_mef(model, x, y, eps, steps, n=20, gamma=2.0, xi=0.15, inner_decay=0.9, decay=0.5, dtype="fp32",
                 device=None) -> int:
    """Baseline (sequential MEF): TransferAttack's mef.py loop, one forward and backward of the
    image batch per neighbour (N per step)."""
    alpha, grad = eps / 10, _sequential_grad(model, y, dtype, device)   # 1.6/255 at eps = 16/255, as the preset
    delta, momentum, evals = torch.zeros_like(x), torch.zeros_like(x), 0
    p = torch.zeros((n, *x.shape), device=x.device)
    for _ in range(steps):
        gs = torch.stack([grad(x + delta + torch.zeros_like(x).uniform_(-gamma * eps, gamma * eps) + xi * eps * p[i])
                          for i in range(n)]) / n
        p = gs / gs.abs().mean(dim=(2, 3, 4), keepdim=True) - inner_decay * p
        delta, momentum = _mi_step(x, delta, momentum, gs.sum(0), alpha, eps, decay)
        evals += n * x.shape[0]
    return evals


# The baseline of each estimator, for the speed-up column.
BASELINES = {"pgn": ("baseline (sequential PGN)", baseline_pgn), "gra": ("baseline (sequential GRA)", baseline_gra),
             "mef": ("baseline (sequential MEF)", baseline_mef)}


# ---------------------------------------------------------------- driver

def hardware(device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits-cnn", help="testbed name or timm name (random init)")
    p.add_argument("--size", type=int, default=None, help="input resolution (default: 32 testbed, 224 timm)")
    p.add_argument("--batch", type=int, default=None, help="images per attack batch (default: 64 testbed, 8 timm)")
    p.add_argument("--search", type=int, nargs="+", default=None,
                   help="batch sizes searched for the limit (default: 4, 8, 16, ... up to the work's own parallelism, "
                        "N·B = 20 x batch images, and N·B itself)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--steps", type=int, default=2, help="T per timed attack call (rates do not depend on it)")
    p.add_argument("--eps", type=float, default=16.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--chunk", default="measure",
                   help="flatbench's chunk for the tuned attacks: an int, auto (the rule) or measure (timed, the default)")
    p.add_argument("--memory-budget-mb", type=float, default=None, help="flatbench's memory budget for neighbour chunks")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the surrogate for the attack rows (compile=true)")
    p.add_argument("--csv", type=Path, default=None, help="CSV path (default: outputs/bench/<model>-<device>.csv)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and one repeat, for the test suite")
    args = p.parse_args(argv)

    from flatbench.models import TESTBED

    testbed = args.model in TESTBED
    args.size = args.size or (32 if testbed else 224)
    args.batch = args.batch or (64 if testbed else 8)
    if not args.search:  # up to the most images PGN could put in one forward: N = 20 neighbours of B images
        top = 20 * args.batch
        args.search = [b for b in (1 << k for k in range(2, 16)) if b < top] + [top]
    if args.smoke:
        args.search, args.batch, args.repeats, args.warmup, args.steps = [4, 8], 4, 1, 0, 1
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    print(f"# {args.model} at {args.size}x{args.size}, batch {args.batch}, {device}, {args.dtype}; {hardware(device)}")

    lim = limit(args, device)
    print(f"limit: {lim['grad_evals_per_s']:.1f} grad evals/s at batch {lim['batch']}, "
          f"{'channels_last' if lim['channels_last'] else 'contiguous'}")
    cl = bool(lim["channels_last"])
    model = build_model(args.model, args.size, device, channels_last=cl)
    x, y = inputs(args.model, args.size, args.batch, device)
    attack_model = torch.compile(model) if args.compile else model
    chunk = args.chunk if args.chunk in ("auto", "measure") else int(args.chunk)
    rows: List[dict] = []
    base_rates: Dict[str, float] = {}
    from flatbench.attacks import METHODS as PRESETS
    wanted = {PRESETS[m][1] for m in args.methods if m in PRESETS}
    for est, (label, baseline) in BASELINES.items():
        if args.no_baseline or est not in wanted:
            continue
        fn = lambda baseline=baseline: baseline(model, x, y, args.eps / 255, args.steps, dtype=args.dtype, device=device)  # noqa: E731
        for _ in range(args.warmup):
            fn()
        with PeakMemory(device) as mem:
            r = timed(fn, device, 0, args.repeats)
        base_rates[est] = r["grad_evals"] / r["seconds"]
        rows.append({"method": label, "estimator": est, "seconds": r["seconds"], "grad_evals": r["grad_evals"],
                     "grad_evals_per_s": base_rates[est], "peak_mib": mem.mib, "chunk": args.batch})
    # What users get: create_attack with no performance arguments (chunk and channels_last
    # "auto": chosen by rule, nothing timed), on a model as it comes (contiguous). The tuned rows
    # use chunk=measure (timed once, in the warm-up; its seconds are reported) or --chunk.
    # A tuning file from the environment would skip the measurement: not here.
    os.environ.pop("FLATBENCH_TUNING_FILE", None)
    from flatbench.attacks import sizing_timed
    default_model = build_model(args.model, args.size, device, channels_last=False)
    for m in args.methods:
        from flatbench.attacks import create_attack

        default_surrogate = bench_surrogate(m, default_model)
        default = create_attack(m, default_surrogate, eps=args.eps / 255, steps=args.steps,
                                amp=args.dtype if args.dtype != "fp32" else None, **BENCH_KWARGS.get(m, {}))
        before = set(sizing_timed._PROCESS)
        for _ in range(max(1, args.warmup)):
            run_attack(default, x, y)
        d = timed(lambda: run_attack(default, x, y), device, 0, args.repeats)
        attack = flatbench_attack(m, bench_surrogate(m, attack_model), args, chunk, cl)
        # Warm-up outside the memory window: chunk=measure times its candidate chunks on the first call.
        for _ in range(max(1, args.warmup)):
            run_attack(attack, x, y)
        # The one-off measurement (0 when an earlier method already measured this model and shape).
        tuning_s = sum(v.get("seconds", 0.0) for k, v in sizing_timed._PROCESS.items() if k not in before)
        with PeakMemory(device) as mem:
            r = timed(lambda: run_attack(attack, x, y), device, 0, args.repeats)
        rows.append({"method": attack.label + (" (compiled)" if args.compile else ""), "estimator": attack.estimator.name,
                     "seconds": r["seconds"], "grad_evals": r["grad_evals"],
                     "grad_evals_per_s": r["grad_evals"] / r["seconds"], "peak_mib": mem.mib,
                     "chunk": attack.resolved_chunk(x),
                     "default_grad_evals_per_s": d["grad_evals"] / d["seconds"], "default_chunk": default.chunk,
                     "default_memory_format": default.memory_format, "default_tuning_s": tuning_s})
    for row in rows:
        per_image = row["grad_evals"] / args.batch
        # Whole attacks at the default T = 10 per second, from the measured rate.
        per_image_t10 = per_image / args.steps * 10
        row.update({"model": args.model, "size": args.size, "batch": args.batch, "device": str(device),
                    "dtype": args.dtype, "steps": args.steps,
                    "images_per_s": row["grad_evals_per_s"] / per_image_t10,
                    "grad_evals_per_image": per_image_t10,
                    # Against the bare loop of one model, in single-model passes (grad_evals' unit).
                    "efficiency": row["grad_evals_per_s"] / lim["grad_evals_per_s"],
                    "default_efficiency": row.get("default_grad_evals_per_s", float("nan")) / lim["grad_evals_per_s"],
                    "speedup_vs_baseline": (row["grad_evals_per_s"] / base_rates[row["estimator"]]
                                            if row["estimator"] in base_rates else float("nan")),
                    "limit_grad_evals_per_s": lim["grad_evals_per_s"], "limit_batch": lim["batch"],
                    "limit_channels_last": lim["channels_last"], "hardware": hardware(device)})
    print(f"{'method':28s} {'img/s':>8s} {'grad/s':>9s} {'eff':>6s} {'default grad/s':>15s} {'default eff':>11s} "
          f"{'speedup':>8s} {'peak MiB':>9s} {'chunk':>6s} {'default chunk':>20s} {'tuning s':>9s}")
    for r in rows:
        dflt = f"{r['default_chunk']} {r['default_memory_format']}" if "default_chunk" in r else ""
        print(f"{r['method']:28s} {r['images_per_s']:8.2f} {r['grad_evals_per_s']:9.1f} {r['efficiency']:6.2f} "
              f"{r.get('default_grad_evals_per_s', float('nan')):15.1f} {r['default_efficiency']:11.2f} "
              f"{r['speedup_vs_baseline']:8.2f} {r['peak_mib']:9.0f} {r['chunk']:>6} {dflt:>20s} "
              f"{r.get('default_tuning_s', float('nan')):9.1f}")
    print("(default: create_attack with no performance arguments, chunk and channels_last auto, by rule; the other "
          "columns: --chunk (measure: timed once, 'tuning s') and the limit's memory format)")
    print(f"(img/s: images per second for a whole T = 10 attack, from the rate measured over {args.steps} step(s))")
    out = args.csv or ROOT / "outputs" / "bench" / f"{args.model.replace('/', '_')}-{device.type}-{args.dtype}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        w.writeheader()
        w.writerows(rows)
    print(f"csv: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
