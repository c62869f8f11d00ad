"""Why the methods that average over moved views of the image fail white-box from digits-cnn: for
BSR and SIA (block shuffles) at their presets and at milder settings, and ANDA (translations), from
digits-cnn and digits-resnet, the white-box success of the method (64 test images, eps = 32/255,
T = 10, seed 0) and the surrogate's accuracy on the views of the clean images (each view of each
image; transform draws of seed 0).

    .venv/bin/python scripts/transform_check.py                                  # about 3 minutes on 2 CPU cores
    .venv/bin/python scripts/transform_check.py --presets digits-cnn-bn digits-mlp   # the presets from other heads

Views the surrogate cannot classify give gradients that say little about the image; white-box
success shows whether the attack still climbs its own surrogate's loss.
"""
import argparse

import torch

from flatbench import create_attack
from flatbench.attacks.transforms import TRANSFORMS
from flatbench.data import DATASETS
from flatbench.models import load_model
from flatbench.core.quantize import quantize

SETTINGS = [("mifgsm", {}), ("bsr", {}), ("bsr", {"max_angle": 10.0}), ("bsr", {"num_block": 2}),
            ("bsr", {"num_block": 1}), ("bsr", {"num_block": 1, "max_angle": 10.0}), ("sia", {}),
            ("sia", {"num_block": 2}), ("anda", {})]


def views(method: str, kw: dict, x: torch.Tensor) -> torch.Tensor:
    """The views a method takes gradients at, of the clean images: BSR's and SIA's copies, ANDA's
    translations (its k×k grid of shifts up to max_shift)."""
    if method == "anda":
        import torch.nn.functional as F

        from flatbench.attacks.estimators.anda import _translation_grid

        out = []
        for th in _translation_grid(kw.get("n_views", 25), kw.get("max_shift", 0.3)):
            grid = F.affine_grid(th.unsqueeze(0).expand(len(x), 2, 3), x.shape, align_corners=False)
            out.append(F.grid_sample(x, grid, align_corners=False))
        return torch.cat(out)
    return TRANSFORMS.build(method, **kw)(x, torch.Generator().manual_seed(0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("surrogates", nargs="*", default=["digits-cnn", "digits-resnet"])
    p.add_argument("--presets", action="store_true", help="only MI-FGSM, BSR, SIA and ANDA at their presets")
    args = p.parse_args()
    data = DATASETS.build("digits").subset(64)
    x, y = data.floats(), data.labels
    print("| surrogate | method | settings | accuracy on the views of the clean images | white-box ASR |")
    print("|---|---|---|---:|---:|")
    for name in args.surrogates:
        model = load_model(name, progress=False)
        for method, kw in [s for s in SETTINGS if not args.presets or not s[1]]:
            acc = ""
            if method != "mifgsm":
                copies = views(method, kw, x)
                with torch.no_grad():
                    hit = model(copies).argmax(1) == y.repeat(len(copies) // len(y))
                acc = f"{100 * float(hit.float().mean()):.1f}"
            attack = create_attack(method, model, eps=32 / 255, **kw)
            adv = quantize(attack(x, y, seed=0), data.images, attack.eps).float() / 255
            with torch.no_grad():
                asr = 100 * float((model(adv).argmax(1) != y).float().mean())
            label = ", ".join(f"{k}={v:g}" for k, v in kw.items()) or "preset"
            print(f"| {name} | {method} | {label} | {acc} | {asr:.1f} |", flush=True)


if __name__ == "__main__":
    main()
