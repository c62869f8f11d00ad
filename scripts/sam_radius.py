"""How SAM's radius trades a testbed surrogate's accuracy for its examples' transfer: for each radius,
train the architecture's recipe with SAM (flatbench.models.testbed, the same seed, initial weights and
batches as the plain instance), then craft MI-FGSM at the testbed's eps = 32/255 on the first images of
the digits test split and evaluate them on the default zoo, leaving out the target of the surrogate's
own architecture (white-box for the plain model). The radius 0 row is the pinned plain instance.

    .venv/bin/python scripts/sam_radius.py                                  # digits-cnn and digits-resnet
    .venv/bin/python scripts/sam_radius.py digits-cnn --rho 0.05,0.1,0.2 --n-images 256

The surrogates digits-cnn-sam and digits-resnet-sam are trained at SAM_RHO
(flatbench/models/testbed/architectures.py); docs/testbed.md gives this script's table.
"""
import argparse
import time
from dataclasses import replace

from flatbench import create_attack
from flatbench.api import craft_set, evaluate_transfer, load_dataset
from flatbench.models import load_model
from flatbench.models.testbed import architectures, training


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", default=["digits-cnn", "digits-resnet"])
    p.add_argument("--rho", default="0.05,0.1,0.2,0.5", help="SAM radii, comma-separated")
    p.add_argument("--n-images", type=int, default=256)
    args = p.parse_args()
    data = load_dataset("digits", n_images=args.n_images)
    print(f"{'surrogate':14s} {'rho':>5s} {'test acc':>8s} {'black-box ASR':>13s} {'seconds':>7s}  "
          f"(MI-FGSM, eps 32/255, {len(data)} images; the default zoo less the surrogate's architecture)")
    for name in args.names:
        for rho in [0.0] + [float(r) for r in args.rho.split(",")]:
            t0 = time.perf_counter()
            if rho == 0:
                model, acc = load_model(name, progress=False), training.pinned_test_acc(name)
            else:
                flat = f"{name}-sam"
                architectures.TESTBED[flat] = replace(architectures.TESTBED[flat], sam=architectures.Sharpness(rho))
                model, meta = training.train(flat, progress=False)
                acc = meta["test_acc"]
            adv = craft_set(create_attack("mifgsm", model, eps=32 / 255), data, progress=False)
            df = evaluate_transfer(adv, data, "digits", surrogate=name, progress=False)
            asr = df[df["target_model"] != name]["asr"].mean()
            print(f"{name:14s} {rho:5.2f} {acc:7.2f}% {asr:12.1f}% {time.perf_counter() - t0:7.1f}", flush=True)


if __name__ == "__main__":
    main()
