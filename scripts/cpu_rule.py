"""The CPU rule against the bare limit: PGN through ``create_attack`` with no
performance arguments (chunk and format by rule, the rule sized from the machine's total memory),
on digits-resnet at 32x32 and timm ResNet-18 (random init) at 64x64, at batch 8 and 64.

Each round measures the bare forward + input-gradient limit (the best over chunks 8-256 up to
N·B, the most images PGN can put in one forward, and both memory formats, scripts/bench.py's loop), then times the default PGN (T = 3, N = 8, eps 16/255: the
API benchmark's setting), then the limit again; the efficiency is the PGN rate over the mean of
the two limits (the machine's speed drifts). The figure is the median of --rounds rounds. The
process keeps its heap as the command line does (flatbench/core/heap.py; --glibc-heap: malloc as it is).

    python scripts/cpu_rule.py                 # about 8 minutes on 2 cores
    python scripts/cpu_rule.py --rounds 1 --configs digits-resnet:32:8
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

import bench  # noqa: E402

N_SAMPLES = 8
CONFIGS = ["digits-resnet:32:8", "digits-resnet:32:64", "resnet18:64:8", "resnet18:64:64"]


def default_pgn(model, x, y) -> dict:
    from flatbench.attacks import create_attack

    attack = create_attack("pgn", model, eps=16 / 255, steps=3, n_samples=N_SAMPLES)
    attack(x[:1], y[:1])   # warm-up: the rule's size count and the first calls' one-off costs
    attack.grad_evals = 0
    t0 = time.perf_counter()
    attack(x, y, seed=(0, 0))
    seconds = time.perf_counter() - t0
    return {"rate": attack.grad_evals / seconds, "chunk": attack.chunk, "format": attack.memory_format}


def one_round(name: str, size: int, batch: int) -> dict:
    # The limit is searched up to N·B, the most images PGN can put in one forward (scripts/bench.py's rule).
    search = [b for b in (8, 16, 32, 64, 128, 256) if b <= N_SAMPLES * batch]
    args = argparse.Namespace(model=name, size=size, search=search, dtype="fp32", warmup=1, repeats=2)
    cpu = torch.device("cpu")
    before = bench.limit(args, cpu)
    x, y = bench.inputs(name, size, batch, cpu)
    pgn = default_pgn(bench.build_model(name, size, cpu), x, y)
    after = bench.limit(args, cpu)
    lim = (before["grad_evals_per_s"] + after["grad_evals_per_s"]) / 2
    return {**pgn, "limit": lim, "eff": pgn["rate"] / lim,
            "limit_at": f"{after['batch']}, {'channels_last' if after['channels_last'] else 'contiguous'}"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--configs", nargs="+", default=CONFIGS, help="MODEL:SIZE:BATCH")
    p.add_argument("--glibc-heap", action="store_true",
                   help="leave malloc as it is (by default the heap is kept as the command line keeps it, "
                        "flatbench/core/heap.py; a notebook gets the same with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_)")
    a = p.parse_args(argv)
    if not a.glibc_heap:
        from flatbench.core.heap import keep_heap

        keep_heap()   # for the limit and the attack alike
    from flatbench.attacks import sizing

    cpu = torch.device("cpu")
    print(f"# {bench.hardware(cpu)}; total memory {sizing.total_memory(cpu) / 2 ** 30:.1f} GiB: activation memory by rule "
          f"{sizing.rule_activation_bytes(cpu) / 2 ** 20:.0f} MiB, cap {sizing.rule_cap(cpu)} images")
    print("| surrogate | input | batch | default chunk, format | limit (grad evals/s) | PGN default | default ÷ limit, "
          f"each round | median of {a.rounds} |")
    print("|---|---|---:|---|---:|---:|---|---:|")
    for cfg in a.configs:
        name, size, batch = cfg.split(":")
        rounds = [one_round(name, int(size), int(batch)) for _ in range(a.rounds)]
        r = rounds[0]
        print(f"| {name} | {size} px | {batch} | {r['chunk']}, {r['format']} | "
              f"{statistics.median(x['limit'] for x in rounds):,.0f} | {statistics.median(x['rate'] for x in rounds):,.0f} | "
              f"{' / '.join(format(x['eff'], '.2f') for x in rounds)} | **{statistics.median(x['eff'] for x in rounds):.2f}** |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
