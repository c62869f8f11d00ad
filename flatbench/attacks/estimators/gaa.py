"""GAA: each neighbour's gradient aggregated with the gradient one L1-normalised step further uphill."""
from __future__ import annotations

import torch

from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.estimators.base import ESTIMATORS, SAMPLES, Estimator, _neighbours
from flatbench.attacks.parts import Param

# How g' (at the neighbour) and ĝ (one step of ρ further) are aggregated: the weights of each.
AGGREGATION = {"paper": (lambda lam: (1 - lam, 1 + lam)),            # (1−λ)·g' + (1+λ)·ĝ
               "transferattack": (lambda lam: (1 - lam, 2 + lam))}   # ĝ + (1−λ)·g' + (1+λ)·ĝ: ĝ counted twice


class GAA(Estimator):
    """Gradient Aggregation; see the declarations of its presets ``gaa`` and ``gaa_ta`` below."""

    def __init__(self, lam: float, r: float, zeta: float, n_samples: int, aggregation: str, name: str):
        self.lam, self.r, self.zeta, self.n_samples, self.aggregation = lam, r, zeta, n_samples, aggregation
        self.declaration = ESTIMATORS.get(name)
        self.check()

    def __call__(self, ctx, x, y):
        n, b = self.n_samples, x.shape[0]
        w1, w2 = AGGREGATION[self.aggregation](self.lam)
        radius = ctx.threat.noise_radius(self.zeta, x)
        total = torch.zeros_like(x)
        for lo, hi in ctx.chunks(n, b):
            xp = _neighbours(ctx, x, lo, hi, radius, "noise").clamp(0.0, 1.0)   # x' in the image box, as the port
            yp = y.repeat(hi - lo)
            g1 = ctx.grad(xp, yp, [("g1", i) for i in range(lo, hi)])
            g2 = ctx.grad(xp + self.r * ctx.threat.unit_direction(g1, "l1"), yp, [("g2", i) for i in range(lo, hi)])
            for part in (w1 * g1 + w2 * g2).view(hi - lo, *x.shape):
                total += part
        return total / n

    def evals_per_image(self, step):
        return 2 * self.n_samples

    def describe(self, threat, alpha):
        w1, w2 = AGGREGATION[self.aggregation](self.lam)
        return [f"ḡ = 0; for i = 1..N (N = {self.n_samples}, evaluated together in chunks):",
                f"    x' = clip(x_eval + u_i, 0, 1),  u_i ~ {threat.noise_text.format(z=f'{self.zeta:g}')}",
                "    g' = ∇ℓ(x')",
                f"    ĝ = ∇ℓ(x' + ρ·{threat.unit_direction_text('l1').replace('g1', 'g′')}),   ρ = {self.r * 255:g}/255",
                f"    ḡ += {w1:g}·g' + {w2:g}·ĝ   (λ = {self.lam:g}: "
                + ("(1−λ)·g' + (1+λ)·ĝ, the paper's aggregation)" if self.aggregation == "paper"
                   else "ĝ + (1−λ)·g' + (1+λ)·ĝ, TransferAttack's line, ĝ counted twice)"),
                "g = ḡ/N"]


def _params(aggregation: str):
    return (
        Param("lam", 0.2, "number", lambda v: 0 <= v <= 1, "in [0, 1]"),
        Param("r", 1.6 / 255, "number", lambda v: v > 0, "> 0 (a length: the L1 look-ahead)", length=True),
        Param("zeta", 3.5, "number", lambda v: v >= 0, ">= 0 (in units of eps; 0: no sampling)"),
        Param("n_samples", 20, "integer", lambda v: v >= 1, ">= 1"),
        Param("aggregation", aggregation, "choice", choices=tuple(AGGREGATION)),
    )


def _preset(name: str):
    def make(**settings) -> GAA:
        return GAA(name=name, **settings)

    return make


_SYMBOLS = """Paper symbols → parameters: λ (aggregation weight) → ``lam``, ρ (the look-ahead's length) → ``r``,
ξ (the sampling ball, in units of ε) → ``zeta``, N → ``n_samples``. Per step and neighbour:
x' = clip(x + δ + u, 0, 1), u ~ U(±ξ), g' = ∇ℓ(x'), ĝ = ∇ℓ(x' + ρ·g'/‖g'‖₁), and the N aggregated
gradients are averaged; MI-FGSM's momentum (μ = 1) and α = ε/T follow. The defaults are
TransferAttack's ``gradient/gaa.py``: λ = 0.2, ρ = 1.6/255 (ε/10 at ε = 16/255; ``method=gaa`` keeps
that ratio at every ε), ξ = 3.5·ε (the class sets it whatever its own ``xi`` argument says), N = 20."""

ESTIMATORS.declare("gaa", "GAA", _params("paper"), published_with="mifgsm", cost=SAMPLES, differences=DIFFERENCES["gaa"],
                   doc=f"""GAA (Gan et al., 2025, "Gradient Aggregation Attack") with the aggregation (1−λ)·g' + (1+λ)·ĝ.

{_SYMBOLS}

TransferAttack's line reads ``g_hat + (1-λ)·g' + (1+λ)·g_hat`` under the comment "by Eq. (9)": ĝ
twice. This preset drops the extra ĝ, as the comment's own weights (1−λ, 1+λ) read; the paper's
Eq. 9 could not be checked here, so which of the two it prints is not established. TransferAttack's
form, which its published numbers come from, is ``gaa_ta``.
""")(_preset("gaa"))

ESTIMATORS.declare("gaa_ta", "GAA-TA", _params("transferattack"), published_with="mifgsm", cost=SAMPLES,
                   differences=DIFFERENCES["gaa_ta"], doc=f"""GAA as TransferAttack's ``gradient/gaa.py`` runs it: ĝ + (1−λ)·g' + (1+λ)·ĝ.

{_SYMBOLS}

Tested equal to a reference written out from that file, with ξ = 0 (no draws) and with its draws
replayed (the neighbours' noise shared). Its published ResNet-50 row reproduces with this preset.
""")(_preset("gaa_ta"))
