"""Threat models: where the perturbation δ may live (an L∞ or L2 ball, inside the [0,1] box)."""
from __future__ import annotations

import math

import torch

_TINY = 1e-12


def _per_example(t: torch.Tensor) -> tuple:
    return (t.shape[0],) + (1,) * (t.dim() - 1)


def mean_abs_normalize(g: torch.Tensor) -> torch.Tensor:
    """g / mean|g| per example; a zero gradient stays zero instead of becoming NaN."""
    return g / g.abs().flatten(1).mean(1).clamp_min(_TINY).view(_per_example(g))


def l1_normalize(g: torch.Tensor) -> torch.Tensor:
    """g / ‖g‖₁ per example (GAA's look-ahead); a zero gradient stays zero."""
    return g / g.abs().flatten(1).sum(1).clamp_min(_TINY).view(_per_example(g))


def l2_normalize(g: torch.Tensor) -> torch.Tensor:
    """g / ‖g‖₂ per example; a zero gradient stays zero."""
    return g / g.flatten(1).norm(dim=1).clamp_min(_TINY).view(_per_example(g))


class LinfBall:
    """‖δ‖∞ ≤ eps. The ascent step is α·sign(m) (the FGSM family's update)."""

    name = "linf"

    def __init__(self, eps: float):
        self.eps = float(eps)

    def step(self, delta: torch.Tensor, m: torch.Tensor, alpha: float) -> torch.Tensor:
        return delta + alpha * m.sign()

    def clip_ball(self, delta: torch.Tensor) -> torch.Tensor:
        """δ clipped to the ball, not yet to the box."""
        return delta.clamp(-self.eps, self.eps)

    def project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x + self.clip_ball(delta)).clamp(0.0, 1.0) - x

    def noise_radius(self, zeta: float, x: torch.Tensor) -> float:
        """Per-pixel half-width of the uniform neighbourhood U(−ζ·ε, ζ·ε)."""
        return zeta * self.eps

    def unit_direction(self, g: torch.Tensor, normalize: str) -> torch.Tensor:
        """A look-ahead direction for a step of length r: g/mean|g| moves each pixel by about r
        (PGN's code, TransferAttack's GNP port), g/‖g‖₂ is an L2 step of r (the GNP paper), g/‖g‖₁ moves
        the whole image by r in the L1 norm (GAA)."""
        return {"mean_abs": mean_abs_normalize, "l1": l1_normalize}.get(normalize, l2_normalize)(g)

    def nesterov_direction(self, m: torch.Tensor) -> torch.Tensor:
        """NI-FGSM evaluates at x + α·μ·m, m as it is (the public code)."""
        return m

    # The text of each operation, for Attack.describe.
    step_text = "δ = clip(δ + α·sign(m), −ε, ε); then x + δ clipped to [0, 1]"
    noise_text = "U(−{z}·ε, {z}·ε) per pixel"

    def unit_direction_text(self, normalize: str) -> str:
        return {"mean_abs": "g1/mean|g1|", "l1": "g1/‖g1‖₁"}.get(normalize, "g1/‖g1‖₂")

    def momentum_text(self) -> str:
        return "m"



class L2Ball:
    """‖δ‖₂ ≤ eps. The ascent step is α·m/‖m‖₂ (normalised gradient ascent)."""

    name = "l2"

    def __init__(self, eps: float):
        self.eps = float(eps)

    def step(self, delta: torch.Tensor, m: torch.Tensor, alpha: float) -> torch.Tensor:
        return delta + alpha * l2_normalize(m)

    def clip_ball(self, delta: torch.Tensor) -> torch.Tensor:
        """δ scaled down onto the ball when it is outside, not yet clipped to the box."""
        norm = delta.flatten(1).norm(dim=1).view(_per_example(delta))
        return delta * (self.eps / norm.clamp_min(_TINY)).clamp(max=1.0)

    def project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # Clipping to the box only shrinks |δ_i|, so the L2 constraint still holds after it.
        return (x + self.clip_ball(delta)).clamp(0.0, 1.0) - x

    def noise_radius(self, zeta: float, x: torch.Tensor) -> float:
        # A per-pixel U(±ζ·ε) would have an L2 norm ~√d times the ball; scale it so the
        # neighbourhood's typical L2 size is ζ·ε, as it is for the L∞ ball in its own norm.
        return zeta * self.eps / math.sqrt(x[0].numel())

    def unit_direction(self, g: torch.Tensor, normalize: str) -> torch.Tensor:
        """Every look-ahead is an L2 step of length r here, whatever the normalisation: a
        per-pixel (mean-|g|) step of r would be about √d·r long in this ball's own norm."""
        return l2_normalize(g)

    def nesterov_direction(self, m: torch.Tensor) -> torch.Tensor:
        """NI-FGSM's x + α·μ·m becomes an L2 move of α·μ, as its ascent step is one of α."""
        return l2_normalize(m)

    step_text = "δ = δ + α·m/‖m‖₂, scaled down to ‖δ‖₂ ≤ ε; then x + δ clipped to [0, 1]"
    noise_text = "U(−{z}·ε/√d, {z}·ε/√d) per pixel (d pixels: a typical L2 size of {z}·ε)"

    def unit_direction_text(self, normalize: str) -> str:
        return "g1/‖g1‖₂"  # whatever normalize says: see unit_direction

    def momentum_text(self) -> str:
        return "m/‖m‖₂"


THREATS = {"linf": LinfBall, "l2": L2Ball}
