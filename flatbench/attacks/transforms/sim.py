"""SIM: scale copies."""
from __future__ import annotations

import torch

from flatbench.attacks.parts import Param
from flatbench.attacks.transforms.base import TRANSFORMS, InputTransform


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
