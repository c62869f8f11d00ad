"""VMI-FGSM's variance tuning."""
from __future__ import annotations

from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.parts import Param
from flatbench.attacks.estimators.base import ESTIMATORS, SAMPLES, Estimator, _neighbour_mean


@ESTIMATORS.declare("vmi", "VMI", published_with="mifgsm", published_label="VMI-FGSM", cost=SAMPLES,
                    differences=DIFFERENCES["vmi"], params=(
    Param("n_samples", 20, "integer", lambda v: v >= 1, ">= 1"),
    Param("zeta", 1.5, "number", lambda v: v >= 0, ">= 0 (in units of eps)"),
), doc="""VMI-FGSM (Wang & He, CVPR 2021, arXiv 2103.15571): N=20 neighbours in U(±1.5·ε).

Paper symbols → parameters: N → ``n_samples``, β (the neighbourhood's radius in units of ε) →
``zeta``. Returns ∇ℓ(x) + v, v = mean_i ∇ℓ(x + u_i) − ∇ℓ(x) from the previous step.
""")
class Variance(Estimator):
    def __init__(self, n_samples: int = 20, zeta: float = 1.5):
        self.n_samples, self.zeta = n_samples, zeta
        self.check()

    def __call__(self, ctx, x, y):
        g = ctx.grad(x, y, [("g",)])
        v = ctx.state.get("vmi_v")
        ctx.state["vmi_v"] = _neighbour_mean(ctx, x, y, self.n_samples, self.zeta) - g
        return g if v is None else g + v

    def evals_per_image(self, step):
        return 1 + self.n_samples

    def describe(self, threat, alpha):
        return ["g0 = ∇ℓ(x_eval)",
                "g = g0 + v   (v = 0 at the first step)",
                f"v ← (1/N)·Σ_i ∇ℓ(x_eval + u_i) − g0,  u_i ~ {threat.noise_text.format(z=f'{self.zeta:g}')},  "
                f"N = {self.n_samples}   (used at the next step)"]
