"""How much the chunk size and memory format move an attack's 8-bit images.

The noise of every attack is keyed per neighbour, so chunking and memory format do not change
the attack; they change the order in which convolutions sum, which can move a pixel across an
8-bit rounding boundary. This script crafts one set per (chunk, channels_last) and counts
the pixels that differ from the first.

    python scripts/chunk_numerics.py                       # digits CNN and ResNet, PGN, 16 images
    python scripts/chunk_numerics.py --models digits-resnet --n 64 --method pgn_dim_tim
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["digits-cnn", "digits-resnet"])
    p.add_argument("--method", default="pgn")
    p.add_argument("--n", type=int, default=16, help="images (random, seeded)")
    p.add_argument("--eps", type=float, default=32.0, help="1/255 units")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from flatbench.attacks import create_attack
    from flatbench.models import load_model
    from flatbench.core.quantize import quantize

    settings = [dict(chunk=256, channels_last=False), dict(chunk=None, channels_last=False),
                dict(chunk=16, channels_last=False), dict(chunk=320, channels_last=False),
                dict(chunk=64, channels_last=True), dict(chunk=256, channels_last=True)]
    for name in args.models:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.n, 1, 32, 32, generator=g)
        y = torch.randint(0, 10, (args.n,), generator=g)
        x_u8 = (x * 255).round().to(torch.uint8)
        x = x_u8.float() / 255
        ref = None
        for kw in settings:
            model = load_model(name, progress=False)
            out = create_attack(args.method, model, eps=args.eps / 255, **kw)(x, y, seed=0)
            q = quantize(out, x_u8, args.eps / 255, "linf", "round")
            ref = q if ref is None else ref
            diff = int((q != ref).sum())
            print(f"{name:14s} chunk={str(kw['chunk']):5s} channels_last={str(kw['channels_last']):5s} "
                  f"pixels differing from the first: {diff} of {q.numel()} (max {int((q.int() - ref.int()).abs().max())} level)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
