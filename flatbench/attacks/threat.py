"""Threat models: where the perturbation δ may live (an L∞ or L2 ball, inside the [0,1] box)."""
from __future__ import annotations

import math

import torch

_TINY = 1e-12


def _per_example(t: torch.Tensor) -> tuple:
    return (t.shape[0],) + (1,) * (t.dim() - 1)


class LinfBall:
    """‖δ‖∞ ≤ eps. The ascent step is α·sign(m) (the FGSM family's update)."""

    name = "linf"

    def __init__(self, eps: float):
        self.eps = float(eps)

    def step(self, delta: torch.Tensor, m: torch.Tensor, alpha: float) -> torch.Tensor:
        return delta + alpha * m.sign()

    def project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = delta.clamp(-self.eps, self.eps)
        return (x + delta).clamp(0.0, 1.0) - x

    def noise_radius(self, zeta: float, x: torch.Tensor) -> float:
        """Per-pixel half-width of the uniform neighbourhood U(−ζ·ε, ζ·ε)."""
        return zeta * self.eps

    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().amax(1)


class L2Ball:
    """‖δ‖₂ ≤ eps. The ascent step is α·m/‖m‖₂ (normalised gradient ascent)."""

    name = "l2"

    def __init__(self, eps: float):
        self.eps = float(eps)

    def step(self, delta: torch.Tensor, m: torch.Tensor, alpha: float) -> torch.Tensor:
        norm = m.flatten(1).norm(dim=1).clamp_min(_TINY).view(_per_example(m))
        return delta + alpha * m / norm

    def project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        norm = delta.flatten(1).norm(dim=1).view(_per_example(delta))
        delta = delta * (self.eps / norm.clamp_min(_TINY)).clamp(max=1.0)
        # Clipping to the box only shrinks |δ_i|, so the L2 constraint still holds after it.
        return (x + delta).clamp(0.0, 1.0) - x

    def noise_radius(self, zeta: float, x: torch.Tensor) -> float:
        # A per-pixel U(±ζ·ε) would have an L2 norm ~√d times the ball; scale it so the
        # neighbourhood's typical L2 size is ζ·ε, as it is for the L∞ ball in its own norm.
        return zeta * self.eps / math.sqrt(x[0].numel())

    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).norm(dim=1)


THREATS = {"linf": LinfBall, "l2": L2Ball}
