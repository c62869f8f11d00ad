"""``flatbench-zoo``: the digits testbed's pinned weights, and retraining them for real.

    flatbench-zoo list                          # the pinned models: family, instance, parameters, test accuracy, SHA-256
    flatbench-zoo verify                        # check every pinned file against its SHA-256
    flatbench-zoo train [NAMES] --out DIR       # retrain (every testbed model by default) into DIR; report accuracy
                                                # and whether the result equals the pinned weights bit for bit
    flatbench-zoo pin DIR [NAMES]               # maintainers: make the trained weights in DIR the pinned ones

Every architecture has three independently trained instances: ``digits-cnn`` (instance 1, the
default tables' model), ``digits-cnn-2`` and ``digits-cnn-3``, the same recipe from training seeds
1 and 2 (stored in float16).

Runs then use the trained weights with ``paths.zoo_dir=DIR`` (or ``FLATBENCH_ZOO=DIR``).
Training is deterministic on one machine; across CPU types it differs in the last bits,
which is why the pinned weights exist.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from flatbench.models.testbed import (PINNED_DIR, TESTBED, file_sha256, load_pinned, pinned_sidecar, save_trained, train)
from flatbench.core.registry import ConfigError, suggest


def _names(names: Sequence[str]) -> List[str]:
    for n in names:
        if n not in TESTBED:
            raise ConfigError(f"unknown testbed model {n!r}. Valid choices: {', '.join(TESTBED)}.{suggest(n, TESTBED)}")
    return list(names) or list(TESTBED)


def rows() -> List[dict]:
    """One dict per pinned model (name, family, parameters, test accuracy, SHA-256, where trained)."""
    out = []
    for name in TESTBED:
        meta = pinned_sidecar(name)
        out.append({"name": name, "family": meta["family"], "instance": TESTBED[name].instance,
                    "n_params": meta["n_params"], "test_acc": meta["test_acc"],
                    "sha256": meta["sha256"], "trained_on": meta.get("trained_on", "")})
    return out


def cmd_list() -> int:
    print(f"{'model':17s} {'family':10s} {'instance':>8s} {'params':>9s} {'test acc':>8s}  sha256")
    for r in rows():
        print(f"{r['name']:17s} {r['family']:10s} {r['instance']:8d} {r['n_params']:9,d} {r['test_acc']:7.2f}%  "
              f"{r['sha256'][:16]}")
    print(f"pinned weights: {PINNED_DIR}")
    return 0


def cmd_verify() -> int:
    for name in TESTBED:
        load_pinned(name)  # raises with the reason on a mismatch
        print(f"ok  {name}  {pinned_sidecar(name)['sha256'][:16]}")
    return 0


def cmd_train(names: Sequence[str], out: Path, seed: Optional[int], progress: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    print(f"{'model':17s} {'test acc':>8s} {'pinned':>8s} {'diff':>6s}  {'bit-identical':13s} {'seconds':>7s}")
    for name in _names(names):
        model, meta = train(name, seed, progress)
        save_trained(model, meta, out)
        if not (PINNED_DIR / f"{name}.json").is_file():   # a model being added, not pinned yet
            print(f"{name:17s} {meta['test_acc']:7.2f}% {'-':>8s} {'-':>6s}  {'-':13s} {meta['train_seconds']:7.1f}", flush=True)
            continue
        pinned = load_pinned(name)
        same = meta["seed"] == TESTBED[name].seed and all(
            torch.equal(a, b) for a, b in zip(model.state_dict().values(), pinned.state_dict().values()))
        ref = pinned_sidecar(name)["test_acc"]
        print(f"{name:17s} {meta['test_acc']:7.2f}% {ref:7.2f}% {meta['test_acc'] - ref:+6.2f}  {'yes' if same else 'no':13s} "
              f"{meta['train_seconds']:7.1f}", flush=True)
    print(f"trained weights in {out}; use them with paths.zoo_dir={out}")
    return 0


def cmd_pin(src: Path, names: Sequence[str] = ()) -> int:
    for name in _names(names):
        weights, side = src / f"{name}.safetensors", src / f"{name}.json"
        if not weights.exists() or not side.exists():
            raise ConfigError(f"{src} has no trained {name} (train it with `flatbench-zoo train {name} --out {src}`)")
        meta = json.loads(side.read_text())
        if meta.get("seed") != TESTBED[name].seed:
            raise ConfigError(f"{side}: the pinned weights of {name} are training seed {TESTBED[name].seed}'s, this is "
                              f"seed {meta.get('seed')}")
        PINNED_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, PINNED_DIR / weights.name)
        meta.update({"sha256": file_sha256(PINNED_DIR / weights.name),
                     "trained_on": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip()})
        (PINNED_DIR / side.name).write_text(json.dumps(meta, indent=2) + "\n")
        print(f"pinned {name} ({meta['sha256'][:16]})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from flatbench.core.registry import plain

    p = argparse.ArgumentParser(prog="flatbench-zoo", description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the pinned models")
    sub.add_parser("verify", help="check every pinned file against its SHA-256")
    t = sub.add_parser("train", help="retrain models into a directory and compare them with the pinned ones")
    t.add_argument("names", nargs="*", help=f"models (default: all {len(TESTBED)}): {', '.join(TESTBED)}")
    t.add_argument("--out", type=Path, required=True, help="directory for the trained weights and sidecars")
    t.add_argument("--seed", type=int, default=None,
                   help="another training seed than each model's own (instance k: seed k-1)")
    t.add_argument("--no-progress", action="store_true")
    pin = sub.add_parser("pin", help="maintainers: copy trained weights from DIR into the package as the pinned ones")
    pin.add_argument("src", type=Path)
    pin.add_argument("names", nargs="*", help=f"models (default: all {len(TESTBED)})")
    args = p.parse_args(argv)
    try:
        if args.cmd == "list":
            return cmd_list()
        if args.cmd == "verify":
            return cmd_verify()
        if args.cmd == "train":
            return cmd_train(args.names, args.out, args.seed, not args.no_progress)
        return cmd_pin(args.src, args.names)
    except ConfigError as exc:
        print(f"flatbench-zoo: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
