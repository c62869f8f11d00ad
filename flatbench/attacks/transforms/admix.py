"""Admix: mixing with other images of the batch."""
from __future__ import annotations

from typing import Optional

import torch

from flatbench.core.registry import ConfigError
from flatbench.attacks.parts import Param
from flatbench.attacks.transforms.base import TRANSFORMS, InputTransform


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
