"""BSR: block shuffle and rotation."""
from __future__ import annotations

import torch

from flatbench.attacks.parts import Param
from flatbench.attacks.transforms.base import TRANSFORMS, InputTransform


def _block_lengths(n: int, size: int, gen: torch.Generator, device) -> list:
    """BSR's random strip lengths: n weights in (1, 2] (numpy's uniform(2): low 2, high 1), scaled to
    sum to ``size`` and rounded half to even, the largest taking the remainder."""
    rand = 2 - torch.rand(n, generator=gen, device=device, dtype=torch.float64)
    lengths = torch.round(rand / rand.sum() * size).long()
    lengths[int(lengths.argmax())] += size - int(lengths.sum())
    return lengths.tolist()


def _permutation(n: int, gen: torch.Generator, device) -> list:
    return torch.randperm(n, generator=gen, device=device).tolist()


@TRANSFORMS.declare("bsr", "BSR", (
    Param("num_copies", 20, "integer", lambda v: v >= 1, ">= 1"),
    Param("num_block", 3, "integer", lambda v: v >= 1, ">= 1"),
    Param("max_angle", 24.0, "number", lambda v: 0 <= v <= 180, "[0, 180] (degrees)"),
), doc="""BSR: block shuffle and rotation, 20 copies of 3×3 blocks rotated by up to 24°.

Wang et al., "Boosting Adversarial Transferability by Block Shuffle and Rotation" (CVPR 2024,
arXiv 2308.10299). Paper symbols → parameters: the number of transformed copies N →
``num_copies`` (TransferAttack: num_scale), the blocks per side n → ``num_block``, the rotation
bound τ → ``max_angle``. Each copy picks the order of the two axes, cuts the image into
``num_block`` strips of random lengths along the first, shuffles them, rotates each strip by its
own angle in U(−τ, τ) (bilinear, zero fill, the strip's centre), cuts it into strips along the
second axis and shuffles those. As TransferAttack's ``input_transformation/bsr.py``: its class
runs 20 copies (the ``num_scale=20`` its ``main.py`` uses, which made its table), although its
docstring says 10. The draws are shared by the images of a batch, as there.""")
class BSR(InputTransform):
    random = True

    def __init__(self, num_copies: int = 20, num_block: int = 3, max_angle: float = 24.0):
        self.num_copies, self.num_block, self.max_angle = num_copies, num_block, max_angle
        self.check()
        self.copies = self.num_copies

    def draw(self, shape, gen: torch.Generator, device) -> list:
        """One copy's draws: (dims, lengths, order, [(angle, lengths, order) per strip]), in the port's order."""
        dims = [2, 3] if torch.rand((1,), generator=gen, device=device).item() < 0.5 else [3, 2]
        lengths = _block_lengths(self.num_block, shape[dims[0]], gen, device)
        order = _permutation(self.num_block, gen, device)
        strips = []
        for k in order:
            angle = float((2 * torch.rand((1,), generator=gen, device=device, dtype=torch.float64) - 1) * self.max_angle)
            strips.append((angle, _block_lengths(self.num_block, shape[dims[1]], gen, device),
                           _permutation(self.num_block, gen, device)))
        return [dims, lengths, order, strips]

    @staticmethod
    def apply(x: torch.Tensor, plan) -> torch.Tensor:
        """One shuffled, rotated copy of x under ``plan`` (a :meth:`draw`)."""
        from torchvision.transforms.functional import InterpolationMode, rotate

        dims, lengths, order, strips = plan
        parts = x.split(lengths, dim=dims[0])
        out = []
        for k, (angle, inner, inner_order) in zip(order, strips):
            # fill as a list, as torchvision's RandomRotation passes it: the edges blend with a mask
            turned = rotate(parts[k], angle, interpolation=InterpolationMode.BILINEAR, fill=[0.0] * x.shape[1])
            pieces = turned.split(inner, dim=dims[1])
            out.append(torch.cat([pieces[j] for j in inner_order], dim=dims[1]))
        return torch.cat(out, dim=dims[0])

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return torch.cat([self.apply(x, self.draw(x.shape, gen, x.device)) for _ in range(self.num_copies)])

    def describe(self):
        return (f"BSR: {self.num_copies} copies, each cut into {self.num_block} random strips along a random axis, "
                f"shuffled, each strip rotated by U(−{self.max_angle:g}°, {self.max_angle:g}°), cut into "
                f"{self.num_block} strips along the other axis and shuffled")
