"""Clean and white-box PGD-20 accuracy of testbed models on the digits test split (540 images).

    .venv/bin/python scripts/robustness.py                         # the defended targets and digits-cnn
    .venv/bin/python scripts/robustness.py digits-cnn-bn --eps 16

PGD: L∞ at eps (1/255 units, default the testbed's 32), 20 steps of eps/4 from a uniform random
start (seed 0), white-box on the model itself (flatbench.models.testbed.adversarial.robust_accuracy,
the figure an adversarially trained model's sidecar records).
"""
import argparse
import time

from flatbench.data.digits import load_split
from flatbench.models import load_model
from flatbench.models.testbed import accuracy
from flatbench.models.testbed.adversarial import robust_accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", default=["digits-cnn", "digits-cnn-at", "digits-cnn-ens-at"])
    p.add_argument("--eps", type=float, default=32.0)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    test = load_split("test")
    x, y = test.floats(), test.labels
    print(f"{'model':20s} {'clean':>7s} {'PGD-' + str(args.steps):>8s}  (eps={args.eps:g}/255, {len(x)} test images)")
    for name in args.names:
        t0 = time.perf_counter()
        model = load_model(name, progress=False)
        rob = robust_accuracy(model, x, y, eps=args.eps, steps=args.steps)
        print(f"{name:20s} {accuracy(model, x, y):6.2f}% {rob:7.2f}%  ({time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
