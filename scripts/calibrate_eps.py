"""Calibrate the digits testbed's default eps: MI-FGSM white-box and black-box success per eps.

    python scripts/calibrate_eps.py [--n 200] [--eps 16 24 32 48]

Prints one line per (surrogate, eps): white-box ASR and the mean ASR over the other five
zoo models. The README's "Why eps = 32/255 on digits" quotes this output.
"""
import argparse

import torch

from flatbench import create_attack
from flatbench.data import DATASETS
from flatbench.models import TESTBED, load_model
from flatbench.core.quantize import quantize


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--eps", type=float, nargs="+", default=[16, 24, 32, 48])
    p.add_argument("--surrogates", nargs="+", default=["digits-cnn", "digits-resnet"])
    args = p.parse_args()
    d = DATASETS.build("digits").subset(args.n)
    zoo = {n: load_model(n, progress=False) for n in TESTBED}
    print(f"{'surrogate':15s} {'eps':>5s} {'white-box':>10s} {'black-box mean':>15s}")
    for sur in args.surrogates:
        for eps in args.eps:
            a = create_attack("mifgsm", zoo[sur], eps=eps / 255)
            adv = quantize(a(d.floats(), d.labels, seed=0), d.images, a.eps).float() / 255
            with torch.no_grad():
                asr = {n: 100 * float((m(adv).argmax(1) != d.labels).float().mean()) for n, m in zoo.items()}
            black = [v for n, v in asr.items() if n != sur]
            print(f"{sur:15s} {eps:5g} {asr[sur]:10.1f} {sum(black) / len(black):15.1f}", flush=True)


if __name__ == "__main__":
    main()
