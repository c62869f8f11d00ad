"""SIA: structure invariance, one transformation per block."""
from __future__ import annotations

import torch

from flatbench.core.registry import ConfigError
from flatbench.attacks.parts import Param
from flatbench.attacks.transforms.base import TRANSFORMS, InputTransform, _randint


SIA_OPS = ("vertical_shift", "horizontal_shift", "vertical_flip", "horizontal_flip", "rotate180", "scale", "add_noise")


@TRANSFORMS.declare("sia", "SIA", (
    Param("num_copies", 20, "integer", lambda v: v >= 1, ">= 1"),
    Param("num_block", 3, "integer", lambda v: v >= 1, ">= 1"),
    Param("noise", 16 / 255, "number", lambda v: v >= 0, ">= 0 (a length)", length=True),
), doc="""SIA: structure invariance, 20 copies of a 3×3 grid of blocks, each block transformed on its own.

Wang et al., "Structure Invariant Transformation for better Adversarial Transferability" (ICCV
2023, arXiv 2309.14700). Paper symbols → parameters: the number of copies N → ``num_copies``
(TransferAttack: num_scale), the grid s × s → ``num_block``. Each copy cuts the image at
``num_block``−1 random distinct rows and columns and applies to each block one transformation
drawn uniformly from: a vertical or horizontal circular shift (a random step), a vertical or
horizontal flip, a rotation by 180°, a scaling by U(0, 1), or U(±``noise``) noise clipped to
[0, 1] (16/255, a fixed length in the port, whatever ε is). As TransferAttack's
``input_transformation/sia.py``: 20 copies (its class's num_scale, which made its table; its
docstring says 10); its blur operation is defined but not among the choices, nor here. The
draws are shared by the images of a batch, as there; the noise is drawn per pixel.""")
class SIA(InputTransform):
    random = True

    def __init__(self, num_copies: int = 20, num_block: int = 3, noise: float = 16 / 255):
        self.num_copies, self.num_block, self.noise = num_copies, num_block, noise
        self.check()
        self.copies = self.num_copies

    def _cuts(self, size: int, gen, device) -> list:
        if self.num_block > size:
            raise ConfigError(f"transforms.sia.num_block={self.num_block} is out of range; allowed: at most the "
                              f"image side ({size})")
        picked = (torch.randperm(size - 1, generator=gen, device=device)[: self.num_block - 1] + 1).tolist()
        return [0] + sorted(picked) + [size]

    def draw(self, shape, gen: torch.Generator, device) -> list:
        """One copy's draws: (row cuts, column cuts, [(op, its draw) per block, row-major]), in the port's order."""
        cols = self._cuts(shape[3], gen, device)
        rows = self._cuts(shape[2], gen, device)
        blocks = []
        for i in range(len(rows) - 1):
            for j in range(len(cols) - 1):
                op = SIA_OPS[_randint(0, len(SIA_OPS), gen, device)]
                h, w = rows[i + 1] - rows[i], cols[j + 1] - cols[j]
                if op == "vertical_shift":
                    arg = _randint(0, h, gen, device)
                elif op == "horizontal_shift":
                    arg = _randint(0, w, gen, device)
                elif op == "scale":
                    arg = torch.rand((1,), generator=gen, device=device)[0]
                elif op == "add_noise":
                    u = torch.rand((shape[0], shape[1], h, w), generator=gen, device=device)
                    arg = (2 * u - 1) * self.noise
                else:
                    arg = None
                blocks.append((op, arg))
        return [rows, cols, blocks]

    @staticmethod
    def operate(block: torch.Tensor, op: str, arg) -> torch.Tensor:
        if op == "vertical_shift":
            return block.roll(arg, dims=2)
        if op == "horizontal_shift":
            return block.roll(arg, dims=3)
        if op == "vertical_flip":
            return block.flip(dims=(2,))
        if op == "horizontal_flip":
            return block.flip(dims=(3,))
        if op == "rotate180":
            return block.rot90(k=2, dims=(2, 3))
        if op == "scale":
            return arg.to(block.dtype) * block
        return torch.clip(block + arg.to(block.dtype), 0, 1)

    def apply(self, x: torch.Tensor, plan) -> torch.Tensor:
        """One copy of x under ``plan`` (a :meth:`draw`): the blocks transformed and put back in place."""
        rows, cols, blocks = plan
        ops = iter(blocks)
        out = []
        for i in range(len(rows) - 1):
            band = x[:, :, rows[i]:rows[i + 1]]
            out.append(torch.cat([self.operate(band[:, :, :, cols[j]:cols[j + 1]], *next(ops))
                                  for j in range(len(cols) - 1)], dim=3))
        return torch.cat(out, dim=2)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return torch.cat([self.apply(x, self.draw(x.shape, gen, x.device)) for _ in range(self.num_copies)])

    def describe(self):
        return (f"SIA: {self.num_copies} copies, each a {self.num_block}×{self.num_block} grid of random blocks, each "
                f"block shifted, flipped, turned by 180°, scaled by U(0, 1) or given U(±{self.noise * 255:g}/255) "
                "noise (one of the seven, uniformly)")
