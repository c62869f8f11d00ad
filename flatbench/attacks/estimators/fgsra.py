"""FGSRA: neighbours moved in the frequency domain, weighted by their relevance to x and then to g."""
from __future__ import annotations

import functools
import math

import torch

from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.estimators.base import ESTIMATORS, SAMPLES, Estimator, _repeat, per_example_cosine, uniform_noise
from flatbench.attacks.parts import Param
from flatbench.core.registry import ConfigError


@functools.lru_cache(maxsize=8)
def _dct_matrices(n: int):
    """The DCT-II along one axis as TransferAttack's ``dct(x, norm=None)`` computes it by FFT,
    X_k = 2·Σ_m x_m·cos(π·k·(2m+1)/(2n)), and its exact inverse (its ``idct``), in float64."""
    k = torch.arange(n, dtype=torch.float64)
    c = 2 * torch.cos(math.pi * k[:, None] * (2 * k[None, :] + 1) / (2 * n))
    return c, torch.linalg.inv(c)


def _mat(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return m.to(device=like.device, dtype=like.dtype)


def frequency_view(z: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """IDCT(DCT(z + noise) ⊙ mask) over the last two axes (FGSRA's neighbour; differentiable in z)."""
    (ch, ih), (cw, iw) = _dct_matrices(z.shape[-2]), _dct_matrices(z.shape[-1])
    spectrum = _mat(ch, z) @ (z + noise) @ _mat(cw, z).T
    return _mat(ih, z) @ (spectrum * mask) @ _mat(iw, z).T


@ESTIMATORS.declare("fgsra", "FGSRA", published_with="gra_momentum", cost=SAMPLES,
                    differences=DIFFERENCES["fgsra"], params=(
    Param("n_samples", 20, "integer", lambda v: v >= 1, ">= 1"),
    Param("zeta", 2.0, "number", lambda v: v >= 0, ">= 0 (in units of eps)"),
    Param("mask_range", 0.7, "number", lambda v: 0 <= v <= 1, "[0, 1] (the frequency mask's half-width)"),
), doc="""FGSRA (Wang et al., CIKM 2024, "Improving Adversarial Transferability via Frequency-Guided Sample Relevance Attack"): N = 20, β = 2, ρ = 0.7.

Paper symbols → parameters: N (neighbours) → ``n_samples``, β (the neighbourhood's range, in units of
ε) → ``zeta`` (as PGN's ζ and GRA's β), ρ (frequency tuning) → ``mask_range``. Per step: g = ∇ℓ(x); neighbour i is
x_i = IDCT(DCT(x + u_i) ⊙ M_i), u_i ~ U(±β·ε) per pixel and M_i ~ U[1−ρ, 1+ρ] per coefficient, and
its gradient is taken with respect to x through that map; their sum weighted by cos(x, x_i) is ḡ,
and the step follows cos(g, ḡ)·g + (1 − cos(g, ḡ))·ḡ. The method preset ``fgsra`` pairs it with
``gra_momentum`` whose decay indicator compares sign(m) with sign(g) (``indicator=gradient``),
α = ε/T. As TransferAttack's ``gradient/fgsra.py`` (tested equal to a reference written from it, with
its draws replayed); its DCT is the same transform, computed here by matrices instead of FFTs.
Untargeted only: the port sets targeted=False whatever it is given.
""")
class FGSRA(Estimator):
    def __init__(self, n_samples: int = 20, zeta: float = 2.0, mask_range: float = 0.7):
        self.n_samples, self.zeta, self.mask_range = n_samples, zeta, mask_range
        self.check()

    def check_loop(self, targeted: bool) -> None:
        if targeted:
            raise ConfigError("estimator fgsra is untargeted only (TransferAttack's port sets targeted=False); "
                              "use targeted=false")

    def __call__(self, ctx, x, y):
        n, b = self.n_samples, x.shape[0]
        g = ctx.grad(x, y, [("g",)])
        radius = ctx.threat.noise_radius(self.zeta, x)
        total = torch.zeros_like(x)
        for lo, hi in ctx.chunks(n, b):
            noise = uniform_noise(ctx, x, lo, hi, radius, "noise")
            mask = 1 + uniform_noise(ctx, x, lo, hi, self.mask_range, "mask")
            xs = _repeat(x, hi - lo)

            def view(z, noise=noise, mask=mask):
                return frequency_view(z, noise, mask)

            gi = ctx.grad(xs, y.repeat(hi - lo), [("view", i) for i in range(lo, hi)], before=view)
            with torch.no_grad():
                sims = per_example_cosine(xs, view(xs))   # the neighbour's relevance to x
            for part in (gi * sims).view(hi - lo, *x.shape):
                total += part
        s = per_example_cosine(g, total)
        return s * g + (1 - s) * total

    def evals_per_image(self, step):
        return 1 + self.n_samples

    def describe(self, threat, alpha):
        return ["g0 = ∇ℓ(x_eval)",
                f"x_i = IDCT(DCT(x_eval + u_i) ⊙ M_i),  u_i ~ {threat.noise_text.format(z=f'{self.zeta:g}')},"
                f"  M_i ~ U[{1 - self.mask_range:g}, {1 + self.mask_range:g}] per coefficient,  i = 1..N (N = {self.n_samples})",
                "ḡ = Σ_i cos(x_eval, x_i)·∇_x ℓ(x_i)   (the gradient through the map, each weighted by its relevance)",
                "s = cos(g0, ḡ) per image",
                "g = s·g0 + (1−s)·ḡ"]
