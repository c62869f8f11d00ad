"""What every estimator shares: the registry, the base class, the cost knobs, the plain gradient, and
the keyed neighbours that VMI, PGN/GNP and GRA draw."""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, List

import torch

from flatbench.attacks.parts import Knob, Part, Parts

if TYPE_CHECKING:  # pragma: no cover
    from flatbench.attacks.context import StepContext

ESTIMATORS = Parts("estimator")

# The cost knobs (``budget=B``): the number of steps where one step is a fixed number of
# evaluations (the plain gradient, GNP, RAP, ANDA), else the neighbours at the preset's T.
STEPS = Knob("steps", text="T, with α = ε/T where α is left null")
TRAVEL2 = Knob("steps", travel=2.0, text="T, with α = 2ε/T where α is left null")
SAMPLES = Knob("n_samples", text="N, at the preset's T")


class Estimator(Part, abc.ABC):

    @abc.abstractmethod
    def __call__(self, ctx: "StepContext", x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def describe(self, threat, alpha: str) -> List[str]:
        """The lines that compute g at x_eval, with this estimator's values (Attack.describe)."""

    @property
    def width(self) -> int:
        """Copies of each image in its widest forward (its neighbours or views; 1: one at a time)."""
        return getattr(self, "n_samples", None) or getattr(self, "n_views", None) or 1

    # Whether several batches may be crafted in one call (packing): only when the estimator
    # draws no batch-wide keys itself (StepContext.rng) and treats each image alone; the transforms'
    # draws are keyed per batch by the loop, so they never stop it.
    packable = False

    @abc.abstractmethod
    def evals_per_image(self, step: int) -> int:
        """Gradients of the surrogate per input image at step ``step`` (0-based), before the input
        transforms multiply them; an ensemble's gradient counts once here (see passes_per_image)."""

    def passes_per_image(self, step: int, members: int = 1) -> int:
        """Forward+backward passes of single models per input image at step ``step``, before the input
        transforms multiply them: a gradient of an ensemble of K models is K passes. What ``budget=B``
        spends, ``flatbench plan`` counts and ``grad_evals`` records, for every method alike."""
        return members * self.evals_per_image(step)


@ESTIMATORS.declare("plain", "", cost=STEPS, doc="Plain gradient ∇ℓ(x) (through the input transforms).")
class Plain(Estimator):
    packable = True

    def __call__(self, ctx, x, y):
        return ctx.grad(x, y, [("g",)])

    def describe(self, threat, alpha):
        return ["g = ∇ℓ(x_eval)"]

    def evals_per_image(self, step):
        return 1


def members_of(ctx: "StepContext", declared, needs: str) -> int:
    """K, the surrogate ensemble's models, for an estimator that takes each member alone (CWA, the member
    means); a one-line error naming ``needs`` for one model, or for a ``members`` setting that is not K."""
    from flatbench.core.registry import ConfigError

    k = ctx.members
    if k < 2:
        raise ConfigError(f"{needs} needs an ensemble surrogate of two or more models (surrogate=[a,b,...], or "
                          "an Ensemble([m1, m2]) in create_attack); this surrogate is one model")
    if declared is not None and declared != k:
        raise ConfigError(f"estimator.members={declared} but the surrogate ensemble has {k} models")
    return k


def uniform_noise(ctx: "StepContext", x: torch.Tensor, lo: int, hi: int, radius: float, tag: str) -> torch.Tensor:
    """U(−radius, radius) per pixel for neighbours lo..hi−1 of the batch x, stacked copy-major;
    neighbour i's draw is keyed by (seed, step, tag, i), so a chunked call draws what one call
    would. Public so that a reference implementation can consume the very same numbers."""
    u = torch.cat([torch.rand(x.shape, generator=ctx.rng(tag, i), device=x.device, dtype=x.dtype)
                   for i in range(lo, hi)])
    return (2 * u - 1) * radius


def _repeat(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.repeat(n, *([1] * (x.dim() - 1)))


def _neighbours(ctx: "StepContext", x: torch.Tensor, lo: int, hi: int, radius: float, tag: str) -> torch.Tensor:
    """x repeated for neighbours lo..hi−1 (copy-major), each with its own keyed uniform noise."""
    xs = _repeat(x, hi - lo)
    if radius > 0:
        xs = xs + uniform_noise(ctx, x, lo, hi, radius, tag)
    return xs


def _neighbour_mean(ctx: "StepContext", x: torch.Tensor, y: torch.Tensor, n: int, zeta: float) -> torch.Tensor:
    """(1/n)·Σ_i ∇ℓ(x + u_i), u_i ~ U(±ζ·ε) keyed ("noise", i), summed in index order (VMI, GRA)."""
    radius = ctx.threat.noise_radius(zeta, x)
    total = torch.zeros_like(x)
    for lo, hi in ctx.chunks(n, x.shape[0]):
        gn = ctx.grad(_neighbours(ctx, x, lo, hi, radius, "noise"), y.repeat(hi - lo), [("gn", i) for i in range(lo, hi)])
        for part in gn.view(hi - lo, *x.shape):
            total += part
    return total / n


def per_example_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-example cosine of a and b, shaped to broadcast over an example (GRA's and FGSRA's relevance s)."""
    shape = (-1,) + (1,) * (a.dim() - 1)
    a, b = a.flatten(1), b.flatten(1)
    # The clamp changes no value but a zero norm's (the port divides 0 by 0 there: NaN).
    s = torch.sum(a * b, dim=1) / (torch.sqrt(torch.sum(a ** 2, dim=1)) * torch.sqrt(torch.sum(b ** 2, dim=1))).clamp_min(1e-30)
    return s.view(shape)
