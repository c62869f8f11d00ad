"""The gradient-norm penalty, one estimator with three presets: PGN, GNP as its paper writes it, and
GNP as TransferAttack ports it (GNP-TA); the formula is in the package docstring."""
from __future__ import annotations

from typing import Optional

import torch

from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.parts import Param
from flatbench.attacks.estimators.base import ESTIMATORS, SAMPLES, STEPS, Estimator, _neighbours

# The sign of the penalty's look-ahead (the point its second gradient is taken at).
LOOKAHEADS = {"descent": -1.0, "ascent": 1.0}
NORMALIZE = ("mean_abs", "l2")
COMBINE = ("difference", "sum")


class Penalty(Estimator):
    """Gradient-norm penalty estimator; see the module docstring and the declarations of its presets
    ``pgn``, ``gnp`` and ``gnp_ta`` below (their docstrings cite the papers and map the symbols)."""

    def __init__(self, beta: float, r: Optional[float], zeta: float, n_samples: int, lookahead: str, name: str,
                 normalize: str = "mean_abs", combine: str = "difference"):
        # The preset's declaration (by name) checks the values, as ESTIMATORS.build does.
        self.beta, self.r, self.zeta, self.n_samples = beta, r, zeta, n_samples
        self.lookahead, self.normalize, self.combine = lookahead, normalize, combine
        self.declaration = ESTIMATORS.get(name)
        self.check()

    @property
    def packable(self) -> bool:
        return not self.zeta   # ζ = 0 (GNP): no neighbour noise, a deterministic look-ahead per image

    @property
    def sign(self) -> float:
        return LOOKAHEADS[self.lookahead]

    def __call__(self, ctx, x, y):
        n, b, s, r = self.n_samples, x.shape[0], self.sign, self.r  # r: bound to α by the loop when null
        radius = ctx.threat.noise_radius(self.zeta, x)
        total = torch.zeros_like(x)
        for lo, hi in ctx.chunks(n, b):
            xp = _neighbours(ctx, x, lo, hi, radius, "noise")
            yp = y.repeat(hi - lo)
            g1 = ctx.grad(xp, yp, [("g1", i) for i in range(lo, hi)])
            if self.beta:
                ahead = ctx.threat.unit_direction(g1, self.normalize)  # per image and neighbour
                g2 = ctx.grad(xp + s * r * ahead, yp, [("g2", i) for i in range(lo, hi)])
                if self.combine == "difference":
                    g1 = g1 - s * self.beta * (g2 - g1)
                else:
                    g1 = (1 + self.beta) * g1 + self.beta * g2
            for part in g1.view(hi - lo, *x.shape):
                total += part
        return total / n

    def evals_per_image(self, step):
        return self.n_samples * (2 if self.beta else 1)

    def describe(self, threat, alpha):
        descent = self.sign < 0
        r = f"α = {alpha}" if "r" in self.from_alpha else f"{self.r * 255:g}/255 = {self.r:g}"
        sample = (f"x' = x_eval + u_i,  u_i ~ {threat.noise_text.format(z=f'{self.zeta:g}')}" if self.zeta
                  else "x' = x_eval   (ζ = 0: no sampling)")
        if not self.beta:
            body = [sample, "g1 = ∇ℓ(x')", "ḡ += g1   (β = 0: no look-ahead)"]
        else:
            if self.combine == "difference":  # g1 − s·β·(g2 − g1)
                closed = "(1−β)·g1 + β·g2" if descent else "(1+β)·g1 − β·g2"
                comb = f"ḡ += g1 {'+' if descent else '−'} β·(g2 − g1) = {closed},   β = {self.beta:g}"
            else:
                comb = f"ḡ += (1+β)·g1 + β·g2,   β = {self.beta:g}   (a weighted sum, not the penalty's gradient)"
            body = [sample, "g1 = ∇ℓ(x')",
                    f"g2 = ∇ℓ(x' {'−' if descent else '+'} r·{threat.unit_direction_text(self.normalize)}),   r = {r}   ({self.lookahead} look-ahead)",
                    comb]
        return ([f"ḡ = 0; for i = 1..N (N = {self.n_samples}, evaluated together in chunks):"]
                + ["    " + b for b in body] + ["g = ḡ/N"])


def _penalty_params(beta, r, zeta, n_samples, lookahead, normalize, combine, r_text):
    """The penalty's parameters with one preset's defaults (ranges are the same for all three)."""
    return (
        Param("beta", beta, "number", lambda v: v >= 0, ">= 0"),
        Param("r", r, "number", lambda v: v > 0, f"> 0 (a length){r_text}", length=True,
              null="alpha" if r is None else ""),
        Param("zeta", zeta, "number", lambda v: v >= 0, ">= 0 (in units of eps; 0: no sampling)"),
        Param("n_samples", n_samples, "integer", lambda v: v >= 1, ">= 1"),
        Param("lookahead", lookahead, "choice", choices=tuple(LOOKAHEADS)),
        Param("normalize", normalize, "choice", choices=NORMALIZE),
        Param("combine", combine, "choice", choices=COMBINE),
    )


def _preset(name: str):
    def make(**settings) -> Penalty:
        return Penalty(name=name, **settings)

    return make


ESTIMATORS.declare("pgn", "PGN", _penalty_params(0.5, None, 3.0, 20, "descent", "mean_abs", "difference",
                                                  " or null for r = alpha"),
                   published_with="mifgsm", cost=SAMPLES, differences=DIFFERENCES["pgn"], doc="""PGN (Ge et al., NeurIPS 2023, arXiv 2306.05225): β=δ=0.5, r=α, ζ=3, N=20, descent, mean_abs.

Paper symbols → parameters: δ (balance) → ``beta``, α (look-ahead step) → ``r`` (null: α),
ζ (neighbourhood radius, in units of ε) → ``zeta``, N → ``n_samples``. The update is
ḡ = (1−δ)·∇ℓ(x') + δ·∇ℓ(x' − α·ĝ), ĝ = g/mean|g|, averaged over N uniform neighbours x'.
Matches the official code and TransferAttack's ``gradient/pgn.py`` (x' not clipped to
[0,1]; tested equal to a written-out reference with ζ = 0, N = 1).
""")(_preset("pgn"))

ESTIMATORS.declare("gnp", "GNP", _penalty_params(0.8, 0.01, 0.0, 1, "ascent", "l2", "difference", ""),
                   published_with="mifgsm", cost=STEPS, differences=DIFFERENCES["gnp"], doc="""GNP as the paper writes it (Wu et al., ICIP 2023, arXiv 2307.04099): β=0.8, r=0.01, l2.

Paper symbols → parameters: β → ``beta``, r → ``r``. The update is
ḡ = (1+β)·∇ℓ(x) − β·∇ℓ(x + r·∇ℓ(x)/‖∇ℓ(x)‖₂), the first-order gradient of ℓ − β·r·‖∇ℓ‖₂.
No public code of the authors exists; this follows the paper's equations. For the form
TransferAttack ports (and publishes numbers for), use ``gnp_ta``.
""")(_preset("gnp"))

ESTIMATORS.declare("gnp_ta", "GNP-TA", _penalty_params(0.8, 0.01, 0.0, 1, "ascent", "mean_abs", "sum", ""),
                   published_with="mifgsm", cost=STEPS, differences=DIFFERENCES["gnp_ta"], doc="""GNP as TransferAttack ports it (``transferattack/gradient/gnp.py``): β=0.8, r=0.01.

ḡ = (1+β)·g1 + β·∇ℓ(x + r·g1/mean|g1|): a mean-|g| look-ahead (each pixel moves by about
r) and a plus sign. That is not the penalty's gradient; it is kept, labelled GNP-TA, so
that TransferAttack's published GNP rows can be reproduced and never mixed with ``gnp``.
Tested equal to a reference written out from that file.
""")(_preset("gnp_ta"))
