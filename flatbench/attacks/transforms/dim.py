"""DIM: random resize and pad."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from flatbench.core.registry import INTERPOLATIONS
from flatbench.attacks.parts import Param
from flatbench.attacks.transforms.base import TRANSFORMS, InputTransform, _randint


@TRANSFORMS.declare("dim", "DIM", (
    Param("resize_rate", 1.1, "number", lambda v: v >= 1, ">= 1"),
    Param("prob", 0.5, "number", lambda v: 0 <= v <= 1, "[0, 1]"),
    Param("interpolation", "nearest", "choice", choices=INTERPOLATIONS),
), doc="DIM: random resize and pad (rate 1.1, p 0.5, nearest).")
class DIM(InputTransform):
    random = True

    def __init__(self, resize_rate: float = 1.1, prob: float = 0.5, interpolation: str = "nearest"):
        self.resize_rate, self.prob, self.interpolation = resize_rate, prob, interpolation
        self.check()

    def draw(self, size: int, gen: torch.Generator, device) -> Optional[tuple]:
        """(rnd, out, top, left) for this call, or None when the transform is skipped."""
        apply = torch.rand((1,), generator=gen, device=device).item() < self.prob
        out = int(size * self.resize_rate)
        if not apply or out <= size:
            return None
        rnd = _randint(size, out, gen, device)
        rem = out - rnd
        top = _randint(0, rem + 1, gen, device)
        left = _randint(0, rem + 1, gen, device)
        return rnd, out, top, left

    def resize_pad(self, x: torch.Tensor, rnd: int, out: int, top: int, left: int) -> torch.Tensor:
        """x resized to rnd×rnd and zero-padded to out×out with its top-left corner at (top, left)."""
        kw = {} if self.interpolation in ("nearest", "area") else {"align_corners": False}
        z = F.interpolate(x, size=(rnd, rnd), mode=self.interpolation, **kw)
        return F.pad(z, (left, out - rnd - left, top, out - rnd - top), value=0.0)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        p = self.draw(x.shape[-1], gen, x.device)
        if p is None:
            return x
        z = self.resize_pad(x, *p)
        # The original feeds the padded image to Inception directly; models with a fixed
        # input size need it back at W, as the TransferAttack port does (bilinear).
        return F.interpolate(z, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def describe(self):
        return (f"DIM: with probability {self.prob:g}, resize z to rnd×rnd, rnd ∈ [W, {self.resize_rate:g}·W) "
                f"({self.interpolation}), zero-pad to {self.resize_rate:g}·W at a random offset, resize back to W "
                "(bilinear); else z")
