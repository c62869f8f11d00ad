"""TIM: Gaussian smoothing of the gradient."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from flatbench.attacks.parts import Param
from flatbench.attacks.transforms.base import TRANSFORMS, GradientFilter


def gaussian_kernel(kernel_size: int = 15, nsig: float = 3.0) -> torch.Tensor:
    """TIM's kernel: the outer product of N(0,1) densities on linspace(−nsig, nsig, k), summing to 1."""
    t = torch.linspace(-nsig, nsig, kernel_size, dtype=torch.float64)
    k1 = torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum()).float()


@TRANSFORMS.declare("tim", "TIM", (
    Param("kernel_size", 15, "integer", lambda v: v >= 1 and v % 2 == 1, "odd and >= 1"),
    Param("nsig", 3.0, "number", lambda v: v > 0, "> 0"),
), doc="TIM: Gaussian gradient smoothing (15×15, nsig 3).")
class TIM(GradientFilter):
    def __init__(self, kernel_size: int = 15, nsig: float = 3.0):
        self.kernel_size, self.nsig = kernel_size, nsig
        self.check()
        self.kernel = gaussian_kernel(self.kernel_size, self.nsig)

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        c = g.shape[1]
        w = self.kernel.to(g.device, g.dtype).expand(c, 1, -1, -1)
        return F.conv2d(g, w, padding=self.kernel_size // 2, groups=c)

    def describe(self):
        return (f"g = TIM(g): per-channel convolution with a {self.kernel_size}×{self.kernel_size} Gaussian kernel "
                f"(nsig = {self.nsig:g})")
