"""EMI-FGSM's enhanced momentum: gradients averaged along the previous step's direction."""
from __future__ import annotations

from typing import List

import numpy as np
import torch

from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.parts import Param
from flatbench.attacks.estimators.base import ESTIMATORS, SAMPLES, Estimator, _repeat

SAMPLING = ("linear", "uniform", "gaussian")


@ESTIMATORS.declare("emi", "EMI", published_with="mifgsm", published_label="EMI-FGSM", cost=SAMPLES,
                    differences=DIFFERENCES["emi"], params=(
    Param("n_samples", 11, "integer", lambda v: v >= 1, ">= 1"),
    Param("radius", 7.0, "number", lambda v: v >= 0, ">= 0 (in units of alpha, the step size)"),
    Param("sampling", "linear", "choice", choices=SAMPLING),
), doc="""EMI-FGSM (Wang, Lin, Wang & He, BMVC 2021, arXiv 2103.10609): N = 11, radius 7·α, linear sampling.

Paper symbols → parameters: N (the sampling number) → ``n_samples``, η (the sampling
interval's bound, in units of the step size α) → ``radius``, the coefficient distribution →
``sampling`` (``linear``: N evenly spaced c_i in [−η, η]; ``uniform``: U(−η, η);
``gaussian``: clip(N(0,1)/3, −1, 1)·η, drawn once per step for the batch as the paper's code
does). At each step the gradient is averaged along the previous step's direction:
ḡ_t = Σ_i ∇ℓ(x + c_i·α·d_{t−1}), d_{t−1} = ḡ_{t−1}/mean|ḡ_{t−1}| (0 at the first step, so the
N points coincide there); MI-FGSM's momentum then accumulates ḡ_t. Under ``norm=l2`` the
direction is ḡ/‖ḡ‖₂, so that c·α is an L2 length as the step α is. A sampling control for a
flat-maxima study: it averages gradients without a flatness term. Matches TransferAttack's
``gradient/emifgsm.py`` (linear sampling; tested equal to a reference written out from it).
""")
class EMI(Estimator):
    def __init__(self, n_samples: int = 11, radius: float = 7.0, sampling: str = "linear"):
        self.n_samples, self.radius, self.sampling = n_samples, radius, sampling
        self.check()

    def factors(self, ctx) -> List[float]:
        """The N coefficients c_i of this step (in units of α)."""
        n, r = self.n_samples, self.radius
        if self.sampling == "linear":   # numpy's linspace, in float64, as the port computes it
            return np.linspace(-r, r, num=n).tolist()
        g = ctx.rng("emi")
        if self.sampling == "uniform":
            u = torch.rand(n, generator=g, device=g.device, dtype=torch.float64)
            return [float(v) for v in (2 * u - 1) * r]
        z = torch.randn(n, generator=g, device=g.device, dtype=torch.float64)
        return [float(v) for v in (z / 3).clamp(-1, 1) * r]

    def __call__(self, ctx, x, y):
        d = ctx.state.get("emi_d")   # the previous step's normalised average gradient; None at the first step
        c = self.factors(ctx)
        total = torch.zeros_like(x)
        for lo, hi in ctx.chunks(self.n_samples, x.shape[0]):
            xs = _repeat(x, hi - lo) if d is None else torch.cat([x + (c[i] * ctx.alpha) * d for i in range(lo, hi)])
            g = ctx.grad(xs, y.repeat(hi - lo), [("g", i) for i in range(lo, hi)])
            for part in g.view(hi - lo, *x.shape):   # summed in index order: the chunk changes no draw
                total += part
        ctx.state["emi_d"] = ctx.threat.unit_direction(total, "mean_abs").detach()
        return total

    def evals_per_image(self, step):
        return self.n_samples

    def describe(self, threat, alpha):
        unit = "ḡ/mean|ḡ|" if threat.name == "linf" else "ḡ/‖ḡ‖₂"
        how = {"linear": f"{self.n_samples} evenly spaced in [−{self.radius:g}, {self.radius:g}]",
               "uniform": f"{self.n_samples} draws of U(−{self.radius:g}, {self.radius:g}) per step",
               "gaussian": f"{self.n_samples} draws of clip(N(0,1)/3, −1, 1)·{self.radius:g} per step"}[self.sampling]
        return [f"c_i: {how}",
                "g = Σ_i ∇ℓ(x_eval + c_i·α·d)   (d = 0 at the first step; evaluated together in chunks)",
                f"d ← {unit.replace('ḡ', 'g')}   (for the next step)"]
