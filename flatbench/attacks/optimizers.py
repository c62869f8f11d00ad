"""Optimizers, the update rule: how the estimated gradient becomes the ascent direction m.

I-FGSM  (Kurakin et al., 2016, arXiv 1607.02533): m = g.
MI-FGSM (Dong et al., CVPR 2018, arXiv 1710.06081): m ← μ·m + g / mean|g|, μ = ``decay`` = 1.0.
NI-FGSM (Lin et al., ICLR 2020, arXiv 1908.06281): the gradient is taken at the Nesterov
look-ahead point x + α·μ·m (under L2: x + α·μ·m/‖m‖₂, an L2 move of α·μ), then the MI
update; μ = ``decay`` = 1.0.

Normalising by the per-example *mean* |g| rather than the L1 norm of the paper differs by
the constant factor d, which changes neither sign(m) nor the relative weight of steps.
"""
from __future__ import annotations

import torch

from .parts import Param, Part, Parts
from .threat import mean_abs_normalize  # noqa: F401 - re-exported: the MI normalisation lives with the others

OPTIMIZERS = Parts("optimizer")

DECAY = Param("decay", 1.0, "number", lambda v: v >= 0, ">= 0")


@OPTIMIZERS.declare("ifgsm", "I-FGSM", doc="I-FGSM: m = g (no momentum).")
class Optimizer(Part):
    """Base: plain I-FGSM, m = g, evaluated at the current point."""

    def eval_point(self, x_adv: torch.Tensor, state: dict, alpha: float, threat) -> torch.Tensor:
        return x_adv

    def update(self, g: torch.Tensor, state: dict) -> torch.Tensor:
        return g

    def eval_point_text(self, threat) -> str:
        return "x + δ"

    def update_text(self) -> str:
        return "m = g"


@OPTIMIZERS.declare("mifgsm", "MI-FGSM", (DECAY,), doc="MI-FGSM: m ← decay·m + g/mean|g| (decay μ = 1.0).")
class Momentum(Optimizer):
    def __init__(self, decay: float = 1.0):
        self.decay = decay
        self.check()

    def update(self, g: torch.Tensor, state: dict) -> torch.Tensor:
        m = state.get("m")
        g = mean_abs_normalize(g)
        state["m"] = g if m is None else self.decay * m + g
        return state["m"]

    def update_text(self) -> str:
        return f"m = {self.decay:g}·m + g/mean|g|   (μ = decay = {self.decay:g}; m = 0 before the first step)"


@OPTIMIZERS.declare("nifgsm", "NI-FGSM", (DECAY,), doc="NI-FGSM: gradient at x + α·decay·m, then the MI update (decay μ = 1.0).")
class Nesterov(Momentum):
    def eval_point(self, x_adv: torch.Tensor, state: dict, alpha: float, threat) -> torch.Tensor:
        # Sized by the threat model: m as it is under L∞ (the public code), an L2 move of α·μ under L2.
        m = state.get("m")
        return x_adv if m is None else x_adv + alpha * self.decay * threat.nesterov_direction(m)

    def eval_point_text(self, threat) -> str:
        return f"x + δ + α·{self.decay:g}·{threat.momentum_text()}   (the Nesterov point, μ = decay)"
