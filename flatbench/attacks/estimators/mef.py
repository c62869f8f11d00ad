"""MEF: neighbours shifted by each one's gradient-inversion momentum."""
from __future__ import annotations

import torch

from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.parts import Param
from flatbench.attacks.estimators.base import ESTIMATORS, SAMPLES, Estimator, _repeat, uniform_noise


@ESTIMATORS.declare("mef", "MEF", published_with="mifgsm", cost=SAMPLES, differences=DIFFERENCES["mef"], params=(
    Param("n_samples", 20, "integer", lambda v: v >= 1, ">= 1"),
    Param("zeta", 2.0, "number", lambda v: v >= 0, ">= 0 (in units of eps)"),
    Param("xi", 0.15, "number", lambda v: v >= 0, ">= 0 (in units of eps)"),
    Param("inner_decay", 0.9, "number", lambda v: v >= 0, ">= 0"),
), doc="""MEF (Qiu et al., 2024, arXiv 2405.16181, maximin expected flatness): N = 20, γ = 2ε, ξ = 0.15ε, inner decay 0.9.

Paper symbols → parameters: N → ``n_samples``, γ (the sampling bound, in units of ε) →
``zeta``, ξ (the sub-region bound, in units of ε) → ``xi``, the inner momentum's decay →
``inner_decay``. The method preset ``mef`` also sets T = 20, α = ε/10 and MI's decay
μ = 0.5 (TransferAttack's arguments: α = 1.6/255 at ε = 16/255, α·T = 2ε). Each neighbour i is sampled conditionally:
x_i = x + u_i + ξ·p_i, u_i ~ U(±γ), where p_i ← ĝ_i − inner_decay·p_i carries the previous
steps' normalised gradients ĝ_i = g_i/mean|g_i| of that neighbour with the sign inverted
(what TransferAttack calls the gradient-inversion momentum: ĝ_i minus the decayed previous
p_i, so the shift ξ·p_i points mostly along that neighbour's previous *ascent* direction; it does
not move samples towards the neighbourhood's minimum).
Returns (1/N)·Σ_i ∇ℓ(x_i). As TransferAttack's ``gradient/mef.py`` (tested equal to a
reference written from it, with the noise shared). The port differentiates with respect to
the *transformed* point when an input transform is set (a shape error under DIM, and it
passes δ itself through the transform); here the loss is taken through the transforms and
differentiated with respect to the image, as every other part does, so MEF+DIM+TIM runs.
""")
class MEF(Estimator):
    def __init__(self, n_samples: int = 20, zeta: float = 2.0, xi: float = 0.15, inner_decay: float = 0.9):
        self.n_samples, self.zeta, self.xi, self.inner_decay = n_samples, zeta, xi, inner_decay
        self.check()

    def __call__(self, ctx, x, y):
        n = self.n_samples
        radius, reach = ctx.threat.noise_radius(self.zeta, x), ctx.threat.noise_radius(self.xi, x)
        p = ctx.state.get("mef_p")   # (N, *x.shape): each neighbour's inversion momentum; 0 before step 1
        grads = torch.empty((n, *x.shape), device=x.device, dtype=x.dtype)
        for lo, hi in ctx.chunks(n, x.shape[0]):
            shift = uniform_noise(ctx, x, lo, hi, radius, "noise")
            if p is not None:
                shift = shift + reach * p[lo:hi].reshape(shift.shape)
            g = ctx.grad(_repeat(x, hi - lo) + shift, y.repeat(hi - lo), [("g", i) for i in range(lo, hi)])
            grads[lo:hi] = g.view(hi - lo, *x.shape)
        grads = (1 / n) * grads
        dims = tuple(range(2, grads.dim()))
        inverted = (grads / grads.abs().mean(dims, keepdim=True).clamp_min(1e-12)).detach()
        ctx.state["mef_p"] = inverted if p is None else inverted - self.inner_decay * p
        return grads.sum(0)

    def evals_per_image(self, step):
        return self.n_samples

    def describe(self, threat, alpha):
        return [f"for i = 1..N (N = {self.n_samples}, evaluated together in chunks):",
                f"    x_i = x_eval + u_i + ξ·p_i,  u_i ~ {threat.noise_text.format(z=f'{self.zeta:g}')},"
                f"  ξ = {self.xi:g}·ε{'' if threat.name == 'linf' else '/√d'},  p_i = 0 before the first step",
                "    g_i = ∇ℓ(x_i)/N",
                f"    p_i ← g_i/mean|g_i| − {self.inner_decay:g}·p_i   (for the next step)",
                "g = Σ_i g_i"]
