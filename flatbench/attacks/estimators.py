"""Gradient estimators: what the loop ascends at each step.

``plain``   ∇ℓ(x) (through the input transforms).
``pgn``/``gnp``/``gnp_ta``  The gradient-norm penalty, one estimator with three presets.
            With lookahead sign s (descent −1, ascent +1) and normalisation n(·), for i = 1..N:
                x' = x + u,  u ~ U(−ζ·ε, ζ·ε) per pixel   (ζ = 0: x' = x)
                g1 = ∇ℓ(x');   ĝ = n(g1)    mean_abs: g1/mean|g1|,  l2: g1/‖g1‖₂
                g2 = ∇ℓ(x' + s·r·ĝ)
                combine = difference:  ḡ += g1 − s·β·(g2 − g1)
                combine = sum:         ḡ += (1+β)·g1 + β·g2     (TransferAttack's GNP port)
            and returns ḡ/N. ``difference`` approximates g1 − β·r·H·ĝ, the gradient of
            ℓ − λ‖∇ℓ‖ (a penalty on the gradient norm, which favours flat maxima); ``sum``
            is not that gradient and exists only to reproduce the port's published numbers.
            Under ``norm=l2`` the look-ahead is an L2 step of length r whatever ``normalize``
            says (see :meth:`flatbench.attacks.threat.L2Ball.lookahead`).
``vmi``     Variance tuning: returns ∇ℓ(x) + v, v = mean_i ∇ℓ(x + u_i) − ∇ℓ(x) from the
            previous step, u_i ~ U(−ζ·ε, ζ·ε).
``rap``     RAP: ∇ℓ(x + n), n the reverse-adversarial perturbation that *minimises* ℓ in an
            ε_n-ball (K inner sign steps from a random start), from step ``late_start`` on.
``gra``     GRA: s·∇ℓ(x) + (1−s)·ḡ, ḡ the mean gradient of N neighbours in U(±ζ·ε) and s the
            cosine between the two (the decay indicator is the ``gra_momentum`` optimizer).
``mef``     MEF: the mean gradient of N neighbours x + u_i + ξ·p_i, p_i an inner momentum of
            each neighbour's normalised gradient with the sign flipped (gradient inversion).
``anda``    ANDA: the running mean, over all steps so far, of the gradients of a 5×5 grid of
            translated views (the mean of the learned asymptotically normal distribution).

The N neighbours are independent, so they are evaluated together, N·B images at a time in
chunks sized by the attack's ``chunk``. Every random draw is keyed by (step, neighbour),
and neighbours are summed in index order, so the chunk size changes memory and speed only.
"""
from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, List, Optional

import torch
import torch.nn.functional as F

from ..registry import ConfigError
from .differences import DIFFERENCES
from .parts import Knob, Param, Part, Parts

if TYPE_CHECKING:  # pragma: no cover
    from .loop import StepContext

ESTIMATORS = Parts("estimator")

# The cost knobs (``budget=B``, issue 33): the number of steps where one step is a fixed number of
# evaluations (the plain gradient, GNP, RAP, ANDA), else the neighbours at the preset's T.
STEPS = Knob("steps", text="T, with α = ε/T where α is left null")
SAMPLES = Knob("n_samples", text="N, at the preset's T")

# RAP's inner step (the port's reverse perturbation, or the official script's ascent on the
# surrogate's prediction) and GRA's labels (the true ones, or the official code's clean prediction).
INNER_LOSSES = ("reverse", "official")

LABEL_BY = ("truth", "clean_prediction")

# The sign of the penalty's look-ahead (the point its second gradient is taken at).
LOOKAHEADS = {"descent": -1.0, "ascent": 1.0}
NORMALIZE = ("mean_abs", "l2")
COMBINE = ("difference", "sum")


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

    @abc.abstractmethod
    def evals_per_image(self, step: int) -> int:
        """Forward+backward passes per input image at step ``step`` (0-based), before the input
        transforms multiply them: what ``flatbench plan`` counts and ``grad_evals`` records."""


@ESTIMATORS.declare("plain", "", cost=STEPS, doc="Plain gradient ∇ℓ(x) (through the input transforms).")
class Plain(Estimator):
    def __call__(self, ctx, x, y):
        return ctx.grad(x, y, [("g",)])

    def describe(self, threat, alpha):
        return ["g = ∇ℓ(x_eval)"]

    def evals_per_image(self, step):
        return 1


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


# ---------------------------------------------------------------- the rest of the flat-maxima family

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
and 2/255, as ratios of ε; flatbench/scaling.py). Before step ``late_start`` the
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
surrogate's prediction is how issue 34 reads the full script.) Tested equal to a reference
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


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-example cosine of a and b, shaped to broadcast over an example (GRA's relevance s)."""
    shape = (-1,) + (1,) * (a.dim() - 1)
    a, b = a.flatten(1), b.flatten(1)
    # The clamp changes no value but a zero norm's (the port divides 0 by 0 there: NaN).
    s = torch.sum(a * b, dim=1) / (torch.sqrt(torch.sum(a ** 2, dim=1)) * torch.sqrt(torch.sum(b ** 2, dim=1))).clamp_min(1e-30)
    return s.view(shape)


@ESTIMATORS.declare("gra", "GRA", published_with="gra_momentum", cost=SAMPLES, differences=DIFFERENCES["gra"], params=(
    Param("n_samples", 20, "integer", lambda v: v >= 1, ">= 1"),
    Param("zeta", 3.5, "number", lambda v: v >= 0, ">= 0 (in units of eps)"),
    Param("label_by", "truth", "choice", choices=LABEL_BY, added_at="truth"),
), doc="""GRA (Zhu et al., ICCV 2023, "Boosting Adversarial Transferability via Gradient Relevance Attack"): N = 20, ζ = 3.5.

Paper symbols → parameters: β (the neighbourhood's upper bound, in units of ε) → ``zeta``,
m (number of samples) → ``n_samples``; the decay indicator's η → ``gra_momentum``'s ``eta``
(0.94). Returns s·g + (1−s)·ḡ with g = ∇ℓ(x), ḡ = mean_i ∇ℓ(x + u_i), u_i ~ U(±ζ·ε), and
s = cos(g, ḡ) per example (the relevance of the current gradient to its neighbourhood). The
method preset ``gra`` pairs it with ``gra_momentum`` (MI-FGSM with the decay indicator). As
TransferAttack's ``gradient/gra.py`` (tested equal to a reference written from it, with the
neighbours' noise shared); its ``last_noise.cuda()`` (which moves the indicator to the GPU
whenever one exists, wherever the images are) is not reproduced: it changes no number.

``label_by``: ``truth`` (the default: the port's true labels) or ``clean_prediction``, as the
authors' own code labels every gradient: by the surrogate's prediction on the clean image,
labelled GRA-OC (``method=gra_oc``). The two agree wherever the surrogate classifies the clean
image correctly. Untargeted only. Tested equal to the port's reference fed those labels.
""")
class GRA(Estimator):
    def __init__(self, n_samples: int = 20, zeta: float = 3.5, label_by: str = "truth"):
        self.n_samples, self.zeta, self.label_by = n_samples, zeta, label_by
        self.check()

    @property
    def label(self) -> str:
        return "GRA-OC" if self.label_by == "clean_prediction" else "GRA"

    def check_loop(self, targeted: bool) -> None:
        if targeted and self.label_by == "clean_prediction":
            raise ConfigError("estimator.label_by=clean_prediction (GRA's official labels) is for untargeted attacks; "
                              "with targeted=true use label_by=truth")

    def __call__(self, ctx, x, y):
        if self.label_by == "clean_prediction":   # at the first step x_eval is the clean image
            if "gra_y" not in ctx.state:
                ctx.state["gra_y"] = ctx.predict(x)
            y = ctx.state["gra_y"]
        g = ctx.grad(x, y, [("g",)])
        mean = _neighbour_mean(ctx, x, y, self.n_samples, self.zeta)
        s = _cosine(g, mean)
        return s * g + (1 - s) * mean

    def evals_per_image(self, step):
        return 1 + self.n_samples

    def describe(self, threat, alpha):
        return ["g0 = ∇ℓ(x_eval)",
                f"ḡ = (1/N)·Σ_i ∇ℓ(x_eval + u_i),  u_i ~ {threat.noise_text.format(z=f'{self.zeta:g}')},  N = {self.n_samples}",
                "s = cos(g0, ḡ) per image   (the gradient's relevance)",
                *(["(every ∇ℓ on ŷ = argmax f(x), the surrogate's prediction on the clean image: the official code)"]
                  if self.label_by == "clean_prediction" else []),
                "g = s·g0 + (1−s)·ḡ"]


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
