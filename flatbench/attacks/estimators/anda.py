"""ANDA: the running mean of the gradients of translated views."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.parts import Param
from flatbench.attacks.estimators.base import ESTIMATORS, STEPS, Estimator, _repeat


def _translation_grid(n_views: int, max_shift: float) -> torch.Tensor:
    """ANDA's √n × √n affine translations, shifts in linspace(−max, max) on each axis (in
    grid_sample's [−1, 1] coordinates, so 0.3 moves by 15% of the image's side)."""
    k = math.isqrt(n_views)
    shifts = torch.linspace(-max_shift, max_shift, k)
    return torch.stack([torch.tensor([[1.0, 0.0, float(i)], [0.0, 1.0, float(j)]]) for i in shifts for j in shifts])


def _is_square(v: int) -> bool:
    return math.isqrt(v) ** 2 == v


@ESTIMATORS.declare("anda", "ANDA", published_with="ifgsm", cost=STEPS, differences=DIFFERENCES["anda"], params=(
    Param("n_views", 25, "integer", lambda v: v >= 1 and _is_square(v), "a square >= 1 (a k×k grid)"),
    Param("max_shift", 0.3, "number", lambda v: 0 <= v <= 1, "[0, 1] (grid coordinates: 1 is half the image)"),
), doc="""ANDA (Fang et al., CVPR 2024, "Strong Transferable Adversarial Attacks via Ensembled Asymptotically Normal Distribution Learning"): 25 views, shifts up to 0.3.

Paper symbols → parameters: the number of augmentations (n_ens) → ``n_views`` (a square: a
√n × √n grid), the augmentation degree (aug_max) → ``max_shift``. At each step the
gradients of the n translated views of x (bilinear ``grid_sample``, zero padding) join the
statistics of all views of all previous steps; the gradient the step follows is their
running mean, the mean of the asymptotically normal distribution ANDA learns. The method
preset ``anda`` uses I-FGSM's update on it (no momentum), as TransferAttack's port does (its decay is 0). As TransferAttack's
``gradient/anda.py`` with ``sample=False``, its default and the setting of its published
rows (tested equal to a reference written from it). The port takes one image per batch; here
each image of a batch has its own statistics. Its covariance (used only when sampling the
final image, ``sample=True``) is not kept.
""")
class ANDA(Estimator):
    def __init__(self, n_views: int = 25, max_shift: float = 0.3):
        self.n_views, self.max_shift = n_views, max_shift
        self.check()

    def __call__(self, ctx, x, y):
        n, b = self.n_views, x.shape[0]
        thetas = _translation_grid(n, self.max_shift).to(x.device, x.dtype)
        grads = torch.empty((n, *x.shape), device=x.device, dtype=x.dtype)
        for lo, hi in ctx.chunks(n, b):
            theta = thetas[lo:hi].repeat_interleave(b, 0)

            def translate(z, theta=theta):
                grid = F.affine_grid(theta, list(z.shape), align_corners=False)
                return F.grid_sample(z, grid, align_corners=False)

            # Each view is its own leaf, as in the paper's code: one gradient per view.
            g = ctx.grad(_repeat(x, hi - lo), y.repeat(hi - lo), [("view", i) for i in range(lo, hi)], before=translate)
            grads[lo:hi] = g.view(hi - lo, *x.shape)
        seen = ctx.state.get("anda_seen", 0)
        mean = ctx.state.get("anda_mean", torch.zeros_like(x))
        mean = mean * seen / (seen + n) + grads.sum(0) / (seen + n)
        ctx.state["anda_seen"], ctx.state["anda_mean"] = seen + n, mean
        return mean

    def evals_per_image(self, step):
        return self.n_views

    def describe(self, threat, alpha):
        k = math.isqrt(self.n_views)
        return [f"v_k = translate(x_eval, s_k), s_k on a {k}×{k} grid of shifts in [−{self.max_shift:g}, {self.max_shift:g}]²"
                " (grid coordinates, bilinear, zero padding)",
                f"μ ← the running mean of the views' gradients ∇ℓ(v_k) with respect to x_eval, over every view of"
                f" every step so far ({self.n_views} per step)",
                "g = μ"]
