"""What every transform shares: the registry, the two base classes and a keyed integer draw."""
from __future__ import annotations

import abc

import torch

from flatbench.attacks.parts import Part, Parts

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
