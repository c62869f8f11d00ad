"""Input transformations (the loss is taken through them) and gradient filters.

An input transform maps a batch of B images to ``copies``·B images, stacked copy-major;
the loss is averaged over the copies of each image, so the gradient is the mean gradient
over the transformed views. Randomness comes only from the generator passed in, which the
attack loop keys by (seed, step, neighbour), so results do not depend on chunking.

DIM   (Xie et al., CVPR 2019, arXiv 1803.06978): with probability p, resize to rnd×rnd,
      rnd ~ U{W, …, ⌊rate·W⌋−1}, zero-pad at a random offset to ⌊rate·W⌋, resize back to W.
SIM   (Lin et al., ICLR 2020, arXiv 1908.06281): copies x/2^i, i = 0..m−1.
Admix (Wang et al., ICCV 2021, arXiv 2102.00436): x + η·x', x' another image of the batch
      (a constant, never x itself; from the data set for a batch of one), for ``num_admix``
      partners, each at ``num_scale`` scales x/2^i. As TransferAttack's ``admix.py``, which
      draws x' from the batch and detaches it.
TIM   (Dong et al., CVPR 2019, arXiv 1904.02884): a gradient filter, per-channel convolution
      with a normalised k×k Gaussian whose support spans ±nsig standard deviations.
"""
from __future__ import annotations

import abc
import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..registry import INTERPOLATIONS, ConfigError
from .parts import Param, Part, Parts

# Input transforms and gradient filters: both are `transforms` (config group, Attack(transforms=)).
TRANSFORMS = Parts("transform")


class InputTransform(Part, abc.ABC):
    """Maps B images to ``copies``·B views; ``random`` says whether it draws from ``gen``."""

    copies = 1
    random = False

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """What it does to the images z before the model, with its values (Attack.describe)."""


class GradientFilter(Part, abc.ABC):
    """Maps the estimated gradient to a filtered gradient of the same shape."""

    @abc.abstractmethod
    def __call__(self, g: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """The line that filters g, with its values (Attack.describe)."""


def _randint(low: int, high: int, gen: torch.Generator, device) -> int:
    return int(torch.randint(low, high, (1,), generator=gen, device=device).item())


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


@TRANSFORMS.declare("sim", "SIM", (Param("num_scale", 5, "integer", lambda v: v >= 1, ">= 1"),),
                    doc="SIM: average over x/2^i, i < num_scale (5).")
class SIM(InputTransform):
    def __init__(self, num_scale: int = 5):
        self.num_scale = num_scale
        self.check()
        self.copies = self.num_scale

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return torch.cat([x / (2**i) for i in range(self.num_scale)])

    def describe(self):
        return f"SIM: the {self.num_scale} copies z/2^i, i = 0..{self.num_scale - 1}"


@TRANSFORMS.declare("admix", "Admix", (
    Param("strength", 0.2, "number", lambda v: v >= 0, ">= 0"),
    Param("num_admix", 3, "integer", lambda v: v >= 1, ">= 1"),
    Param("num_scale", 5, "integer", lambda v: v >= 1, ">= 1"),
), doc="Admix: x + 0.2·x_other, 3 partners × 5 scales.")
class Admix(InputTransform):
    random = True

    def __init__(self, strength: float = 0.2, num_admix: int = 3, num_scale: int = 5):
        self.strength, self.num_admix, self.num_scale = strength, num_admix, num_scale
        self.check()
        self.copies = self.num_admix * self.num_scale

        self.partners: Optional[torch.Tensor] = None  # other images, for batches of one (see with_partners)

    def with_partners(self, partners: Optional[torch.Tensor]) -> "Admix":
        """This transform, drawing the partners of a batch of one from ``partners`` (other images
        of the data set, [0,1]); batches of two or more always mix within the batch."""
        import copy

        t = copy.copy(self)
        t.partners = None if partners is None else partners.detach()
        return t

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        # The partner is a constant (detached, as in the public code): image i's loss must send
        # no gradient into the image it is mixed with. It is never the image itself: another
        # image of the batch, or of ``partners`` when the batch holds one image.
        if b > 1:
            others = x.detach()
            pick = lambda: (torch.arange(b, device=x.device)  # noqa: E731
                            + torch.randint(1, b, (b,), generator=gen, device=x.device)) % b
        elif self.partners is not None and len(self.partners):
            others = self.partners.to(x.device, x.dtype)
            pick = lambda: torch.randint(0, len(others), (1,), generator=gen, device=x.device)  # noqa: E731
        else:
            raise ConfigError("Admix mixes each image with another image, never itself: a batch of one image needs "
                              "partner images (Attack(x, y, partners=other_images), which flatbench's cells pass "
                              "from the data set), or attack batches of two or more")
        mixed = torch.cat([x + self.strength * others[pick()] for _ in range(self.num_admix)])
        return torch.cat([mixed / (2**i) for i in range(self.num_scale)])

    def describe(self):
        return (f"Admix: {self.num_admix} mixes z + {self.strength:g}·z_other (z_other another image, a constant), "
                f"each at the scales /2^i, i = 0..{self.num_scale - 1} ({self.copies} copies)")


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
