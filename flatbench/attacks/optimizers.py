"""Optimizers, the update rule: how the estimated gradient becomes the ascent direction m.

I-FGSM  (Kurakin et al., 2016, arXiv 1607.02533): m = g.
MI-FGSM (Dong et al., CVPR 2018, arXiv 1710.06081): m ← μ·m + g / mean|g|, μ = ``decay`` = 1.0.
NI-FGSM (Lin et al., ICLR 2020, arXiv 1908.06281): the gradient is taken at the Nesterov
look-ahead point x + α·μ·m (under L2: x + α·μ·m/‖m‖₂, an L2 move of α·μ), then the MI
update; μ = ``decay`` = 1.0.
GRA-MI  (Zhu et al., ICCV 2023): the MI update with GRA's decay indicator, a per-pixel step
size M ⊙ α that shrinks by η wherever sign(m) flips (``gra_momentum``, with the ``gra`` estimator).

Normalising by the per-example *mean* |g| rather than the L1 norm of the paper differs by
the constant factor d, which changes neither sign(m) nor the relative weight of steps.
"""
from __future__ import annotations

import torch

from flatbench.attacks.parts import Param, Part, Parts
from flatbench.attacks.threat import mean_abs_normalize  # noqa: F401 - re-exported: the MI normalisation lives with the others

OPTIMIZERS = Parts("optimizer")

DECAY = Param("decay", 1.0, "number", lambda v: v >= 0, ">= 0")


@OPTIMIZERS.declare("ifgsm", "I-FGSM", doc="I-FGSM: m = g (no momentum).")
class Optimizer(Part):
    """Base: plain I-FGSM, m = g, evaluated at the current point."""

    def eval_point(self, x_adv: torch.Tensor, state: dict, alpha: float, threat) -> torch.Tensor:
        return x_adv

    def update(self, g: torch.Tensor, state: dict) -> torch.Tensor:
        return g

    def step_size(self, alpha: float, state: dict):
        """The step size of this step: α, or a tensor of per-pixel sizes (GRA's decay indicator)."""
        return alpha

    def eval_point_text(self, threat) -> str:
        return "x + δ"

    def update_text(self) -> str:
        return "m = g"

    def step_size_text(self) -> str:
        """A line for Attack.describe when the step size is not α."""
        return ""


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


# What the decay indicator compares sign(m) with: the previous momentum (GRA) or the step's gradient (FGSRA).
INDICATORS = ("momentum", "gradient")


@OPTIMIZERS.declare("gra_momentum", "GRA-MI", (
    DECAY,
    Param("eta", 0.94, "number", lambda v: 0 < v <= 1, "(0, 1]"),
    Param("indicator", "momentum", "choice", choices=INDICATORS, added_at="momentum"),
), doc="""MI-FGSM with GRA's decay indicator (Zhu et al., ICCV 2023): η = 0.94, decay μ = 1.0.

Paper symbols → parameters: η (attenuation factor) → ``eta``, μ → ``decay``. M starts at 1/η;
after each MI update, M ← M ⊙ (1 where sign(m) kept its sign, η where it changed), and the
step is δ + (M·α) ⊙ sign(m). At the first step the previous m is 0, whose sign differs from
every non-zero sign(m), so M = (1/η)·η there. η = 1 is plain MI-FGSM. As TransferAttack's
``gradient/gra.py`` (``get_decay_indicator``), with the same order of operations.

``indicator``: what sign(m) is compared with: ``momentum``, the previous m (GRA), or ``gradient``, this
step's gradient g (FGSRA, as TransferAttack's ``gradient/fgsra.py``: M ← M ⊙ (1 where sign(m) = sign(g),
else η)).
""")
class DecayIndicator(Momentum):
    def __init__(self, decay: float = 1.0, eta: float = 0.94, indicator: str = "momentum"):
        self.decay, self.eta, self.indicator = decay, eta, indicator
        self.check()

    def update(self, g: torch.Tensor, state: dict) -> torch.Tensor:
        last = state.get("m")
        m = super().update(g, state)
        M = state.get("gra_M")
        if M is None:
            M = torch.full_like(m, 1 / self.eta)
        if self.indicator == "gradient":
            same = (m.sign() == g.sign()).float()
        else:
            last_sign = torch.zeros_like(m) if last is None else last.sign()
            same = (last_sign == m.sign()).float()
        state["gra_M"] = M * (same + (torch.ones_like(m) - same) * self.eta)
        return m

    def step_size(self, alpha: float, state: dict):
        return state["gra_M"] * alpha

    def step_size_text(self) -> str:
        kept = "sign(m) = sign(g)" if self.indicator == "gradient" else "sign(m) kept its sign"
        return f"M ← M ⊙ (1 where {kept}, else η),  η = {self.eta:g},  M = 1/η before the first step;  α_t = M ⊙ α"
