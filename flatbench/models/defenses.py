"""Input-transformation defenses, applied in front of a target model.

A defended target is a zoo entry with ``role: defense`` and a ``defense`` node, e.g.
``{model: inception_v3.tf_in1k, role: defense, defense: {name: jpeg, quality: 75}}``.
Defenses act on [0,1] images at the data set's resolution and are used for evaluation
only: they are not differentiable and do not claim to be (no BPDA here).

Randomised defenses (R&P, randomized smoothing) draw their randomness from a generator
keyed by ``seed`` and the image's own bytes, so a given image gets the same draw whatever
batch, shard or process it is evaluated in.
"""
from __future__ import annotations

import io
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from flatbench.core.registry import ConfigError, Registry
from flatbench.core.keyed import keyed_generator
from flatbench.core.quantize import quantize

DEFENSES = Registry("defense")


def _image_generators(x: torch.Tensor, seed: int) -> List[torch.Generator]:
    gens = []
    for img in quantize(x).cpu():
        gens.append(keyed_generator(img.numpy().tobytes(), salt=str(int(seed)).encode()))
    return gens


class Defense(nn.Module):
    """x in [0,1] (NCHW) -> defended x in [0,1], same shape (subclasses define forward)."""


@DEFENSES.register("jpeg")
class JPEG(Defense):
    """JPEG compression at ``quality`` (default 75), through PIL (Guo et al., 2018; Das et al., 2017)."""

    def __init__(self, quality: int = 75):
        super().__init__()
        if not 1 <= int(quality) <= 95:
            raise ConfigError(f"defense jpeg: quality={quality} is out of range; allowed 1..95")
        self.quality = int(quality)

    def forward(self, x):
        from PIL import Image
        import numpy as np

        out = []
        for img in quantize(x).cpu():
            arr = img.permute(1, 2, 0).numpy()
            pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=self.quality)
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(pil.mode))
            t = torch.from_numpy(dec.copy())
            out.append(t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1))
        return torch.stack(out).to(x.device, torch.float32) / 255.0


@DEFENSES.register("bitdepth")
class BitDepth(Defense):
    """Bit-depth reduction to ``bits`` bits per channel (Xu et al., feature squeezing, 2018). Default 4."""

    def __init__(self, bits: int = 4):
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise ConfigError(f"defense bitdepth: bits={bits} is out of range; allowed 1..8")
        self.bits = int(bits)

    def forward(self, x):
        levels = 2 ** self.bits - 1
        return torch.round(x.clamp(0, 1) * levels) / levels


@DEFENSES.register("median")
class Median(Defense):
    """Median smoothing over a ``kernel_size`` window per channel, reflect-padded (Xu et al., 2018). Default 3."""

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ConfigError(f"defense median: kernel_size={kernel_size} must be odd and >= 1")
        self.k = int(kernel_size)

    def forward(self, x):
        p = self.k // 2
        n, c, h, w = x.shape
        z = F.pad(x, (p, p, p, p), mode="reflect") if p else x
        patches = F.unfold(z, self.k)  # N, C*k*k, H*W
        return patches.view(n, c, self.k * self.k, h * w).median(2).values.view(n, c, h, w)


@DEFENSES.register("rp")
class RandomResizePad(Defense):
    """Random resizing and padding (R&P, Xie et al., ICLR 2018, arXiv 1711.01991).

    Each image is resized to a random side s in [W, ⌊W·``max_scale``⌋) (nearest), then
    zero-padded at a random offset to ⌊W·``max_scale``⌋, and resized back to W so the
    defended image keeps the data set's resolution. The paper's 299 → [299, 331) → 331 is
    ``max_scale`` = 331/299 (the default).
    """

    def __init__(self, max_scale: float = 331 / 299, seed: int = 0):
        super().__init__()
        if not float(max_scale) > 1:
            raise ConfigError(f"defense rp: max_scale={max_scale} must be > 1")
        self.max_scale, self.seed = float(max_scale), int(seed)

    def forward(self, x):
        w = x.shape[-1]
        final = max(w + 1, int(w * self.max_scale))
        out = []
        for img, gen in zip(x, _image_generators(x, self.seed)):
            s = int(torch.randint(w, final, (1,), generator=gen))
            r = F.interpolate(img[None], size=(s, s), mode="nearest")
            left = int(torch.randint(0, final - s + 1, (1,), generator=gen))
            top = int(torch.randint(0, final - s + 1, (1,), generator=gen))
            r = F.pad(r, (left, final - s - left, top, final - s - top))
            out.append(F.interpolate(r, size=(w, w), mode="bilinear", align_corners=False, antialias=True)[0])
        return torch.stack(out).clamp(0, 1)


class Smoothing(nn.Module):
    """Randomized smoothing prediction (Cohen et al., ICML 2019, arXiv 1902.02918).

    The output is the vote count of each class over ``n`` copies of the input with
    Gaussian noise N(0, ``sigma``²) added in [0,1] units, so argmax is the majority vote
    (ties go to the lowest class index). No abstention: this is the prediction, not the
    certification procedure. Defaults: sigma 0.25, n 100, batch 100 noisy copies per forward.
    """

    def __init__(self, model: nn.Module, sigma: float = 0.25, n: int = 100, batch: int = 100, seed: int = 0):
        super().__init__()
        if not float(sigma) > 0:
            raise ConfigError(f"defense smoothing: sigma={sigma} must be > 0")
        if int(n) < 1 or int(batch) < 1:
            raise ConfigError(f"defense smoothing: n={n} and batch={batch} must be >= 1")
        self.model, self.sigma, self.n, self.batch, self.seed = model, float(sigma), int(n), int(batch), int(seed)

    def forward(self, x):
        rows = []
        for img, gen in zip(x, _image_generators(x, self.seed)):
            counts = None
            for lo in range(0, self.n, self.batch):
                noise = torch.randn((min(self.batch, self.n - lo), *img.shape), generator=gen).to(x.device) * self.sigma
                logits = self.model(img[None] + noise)
                c = torch.bincount(logits.argmax(1), minlength=logits.shape[1]).float()
                counts = c if counts is None else counts + c
            rows.append(counts)
        return torch.stack(rows)


DEFENSES.register("smoothing", Smoothing, doc="randomized smoothing prediction: majority vote of n noisy copies")


class Defended(nn.Module):
    """A target model behind an input-transformation defense."""

    def __init__(self, model: nn.Module, defense: Defense, name: str = ""):
        super().__init__()
        self.model, self.defense = model, defense
        self.name = name or getattr(model, "name", "")

    def forward(self, x):
        return self.model(self.defense(x))


def defend(model: nn.Module, node: dict, name: str = "") -> nn.Module:
    """Wrap ``model`` with the defense described by ``node`` ({name: ..., **settings})."""
    node = dict(node or {})
    if "name" not in node:
        raise ConfigError(f"defense of {name!r}: missing 'name'; valid: {', '.join(DEFENSES.names())}")
    kind = node.pop("name")
    if kind == "smoothing":
        return DEFENSES.build("smoothing", model=model, **node)
    return Defended(model, DEFENSES.build(kind, **node), name=name)
