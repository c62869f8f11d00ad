"""RAP: the gradient at the reverse-adversarial point of the neighbourhood (a min-max)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.parts import Knob, Param
from flatbench.attacks.estimators.base import ESTIMATORS, Estimator, uniform_noise

if TYPE_CHECKING:  # pragma: no cover
    from flatbench.attacks.context import StepContext

# RAP's inner step: the port's reverse perturbation, or the official script's ascent on the
# surrogate's prediction.
INNER_LOSSES = ("reverse", "official")


def _quarter(steps: int) -> int:
    return steps // 4


# RAP's late start stays at a quarter of T (100 of 400 in the paper), whatever T the budget sets.
@ESTIMATORS.declare("rap", "RAP", published_with="mifgsm", cost=Knob("steps", (("late_start", _quarter),),
                                                                      "T, with the late start at T/4 (α stays the preset's)"),
                    differences=DIFFERENCES["rap"],
                    params=(
    Param("late_start", 100, "integer", lambda v: v >= 0, ">= 0 (a step index; 0: from the first step)"),
    Param("eps_n", 16 / 255, "number", lambda v: v > 0, "> 0 (a length)", length=True),
    Param("alpha_n", 2 / 255, "number", lambda v: v > 0, "> 0 (a length)", length=True),
    Param("inner_steps", 8, "integer", lambda v: v >= 1, ">= 1"),
    Param("inner_loss", "reverse", "choice", choices=INNER_LOSSES, added_at="reverse"),
), doc="""RAP (Qin et al., NeurIPS 2022, arXiv 2210.05968): ε_n = 16/255, α_n = 2/255, K = 8, late start 100.

Paper symbols → parameters: ε_n → ``eps_n``, α_n → ``alpha_n``, K (inner iterations) →
``inner_steps``, the late start (RAP-LS) → ``late_start``. The method preset ``rap`` also sets
T = 400 and α = ε/8, ε_n = ε, α_n = ε/8 (TransferAttack's arguments at ε = 16/255, 2/255, 16/255
and 2/255, as ratios of ε; flatbench/attacks/scaling.py). Before step ``late_start`` the
gradient is ∇ℓ(x); from it on, a reverse perturbation n is found by K sign steps that
descend ℓ from a uniform start in the ε_n-ball (n ← clip(n − α_n·sign(∇ℓ(x + n))), in the
ball and the [0,1] box), and the gradient is ∇ℓ(x + n): the attack climbs the worst point
of the neighbourhood, a min-max that favours flat maxima. As TransferAttack's
``gradient/rap.py`` under L∞ (tested equal to a reference written from it, with the start
noise shared). Under L2 the port fails (its ``init_n_rap`` takes a norm over ``dim=10``
and draws ``normal_(-ε, ε)``); here the start is U(±ε_n/√d) per pixel, the steps are L2
steps of α_n and the ball is the L2 ball of radius ε_n.

``inner_loss``: ``reverse`` (the default, as above: TransferAttack's port, the paper's min-max)
or ``official``, the inner step of the authors' own script (github.com/SCLBD/Transfer_attack_RAP,
``rap_attack_new.py``, its ``pgd``), labelled RAP-OC (``method=rap_oc``): n *ascends*
cross-entropy on the surrogate's prediction at x (taken once per outer step, before the inner
steps), from the same uniform start, in the same ball and box. Where x already fools the
surrogate that pushes n away from the adversarial class; where it does not, along the attack.
(The released ``rap_attack_new.py`` takes that label from the data set's target column; the
surrogate's prediction is how the full script reads.) Tested equal to a reference
written from that script.
""")
class RAP(Estimator):
    width = 1   # its inner steps are sequential

    def __init__(self, late_start: int = 100, eps_n: float = 16 / 255, alpha_n: float = 2 / 255, inner_steps: int = 8,
                 inner_loss: str = "reverse"):
        self.late_start, self.eps_n, self.alpha_n, self.inner_steps = late_start, eps_n, alpha_n, inner_steps
        self.inner_loss = inner_loss
        self.check()

    @property
    def label(self) -> str:
        return "RAP-OC" if self.inner_loss == "official" else "RAP"

    def start(self, ctx: "StepContext", x: torch.Tensor) -> torch.Tensor:
        """The inner loop's random start at this step (keyed; exposed for reference tests)."""
        ball = type(ctx.threat)(self.eps_n)
        return uniform_noise(ctx, x, 0, 1, ball.noise_radius(1.0, x), "rap_start")

    def __call__(self, ctx, x, y):
        if ctx.step < self.late_start:
            return ctx.grad(x, y, [("g",)])
        ball = type(ctx.threat)(self.eps_n)
        lo, hi = -x, 1 - x   # n keeps x + n in the [0,1] box

        def box(n):
            return torch.min(torch.max(n, lo), hi)

        n = box(self.start(ctx, x))
        if self.inner_loss == "official":   # ascend CE on the surrogate's current prediction (∇ℓ is −∇CE if targeted)
            yn, direction = ctx.predict(x), (-1.0 if ctx.targeted else 1.0)
        else:                               # descend ℓ on the attack's labels: the reverse perturbation
            yn, direction = y, -1.0
        for k in range(self.inner_steps):
            g = ctx.grad(x + n, yn, [("rap", k)])
            n = box(ball.clip_ball(ball.step(n, direction * g, self.alpha_n)))
        return ctx.grad(x + n, y, [("g",)])

    def evals_per_image(self, step):
        return 1 if step < self.late_start else self.inner_steps + 1

    def describe(self, threat, alpha):
        return [f"if t ≤ {self.late_start}:   (late start: step index t−1 < {self.late_start})",
                "    g = ∇ℓ(x_eval)",
                "else:",
                f"    n ~ {threat.noise_text.format(z='1').replace('1·ε', 'ε_n')},  ε_n = {self.eps_n * 255:g}/255; "
                "n kept in the [0,1] box around x_eval",
                *(["    ŷ = argmax f(x_eval)   (the surrogate's prediction, fixed for the inner steps)",
                   f"    repeat K = {self.inner_steps} times:  n = clip_{{ε_n}}(n + α_n·{'sign' if threat.name == 'linf' else 'l2-unit'}"
                   f"(∇CE(f(x_eval + n), ŷ))),  α_n = {self.alpha_n * 255:g}/255   (ascend CE on ŷ: the official script)"]
                  if self.inner_loss == "official" else
                  [f"    repeat K = {self.inner_steps} times:  n = clip_{{ε_n}}(n − α_n·{'sign' if threat.name == 'linf' else 'l2-unit'}(∇ℓ(x_eval + n))),"
                   f"  α_n = {self.alpha_n * 255:g}/255   (descend ℓ)"]),
                "    g = ∇ℓ(x_eval + n)"]
