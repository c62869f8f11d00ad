"""CWA: flatness across an ensemble, a sharpness-aware outer step over per-model inner steps."""
from __future__ import annotations

import torch

from flatbench.core.registry import ConfigError
from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.parts import Param
from flatbench.attacks.threat import l2_normalize
from flatbench.attacks.estimators.base import ESTIMATORS, TRAVEL2, Estimator, members_of


@ESTIMATORS.declare("cwa", "CWA", published_with="mifgsm", cost=TRAVEL2, differences=DIFFERENCES["cwa"], params=(
    Param("r", 16 / 255 / 15, "number", lambda v: v > 0, "> 0 (a length)", length=True),
    Param("inner_step", 250.0, "number", lambda v: v > 0, "> 0"),
    Param("inner_decay", 1.0, "number", lambda v: v >= 0, ">= 0"),
    Param("members", None, "integer", lambda v: v >= 2, ">= 2 (the ensemble's models; CWA needs an ensemble "
          "surrogate: surrogate=[a,b,...] or create_attack('cwa', Ensemble([m1, m2]), ...))",
          null="the surrogate ensemble's size"),
), doc="""CWA (Chen et al., ICLR 2024, arXiv 2303.09105, common weakness attack): r = ε/15, inner step 250, α = 2ε/T.

Paper symbols → parameters: the sharpness-aware radius r → ``r`` (the preset's rule ε/15),
the inner (cosine-similarity encourager) step β → ``inner_step``, their momentum's decay →
``inner_decay``; K, the ensemble's models → ``members`` (null: the surrogate's). At each step,
from δ: a descent step δ' = Π(δ − r·sign(∇ℓ_ens(x + δ))) on the ensemble's loss; then for each
model k in turn, v ← inner_decay·v + ∇ℓ_k(x + δ')/‖∇ℓ_k(x + δ')‖₂ and
δ' ← Π(δ' + inner_step·v), v kept across steps; the step's gradient is δ' − δ, which MI-FGSM's
momentum accumulates (α = 2ε/T, TransferAttack's, whatever T: the cost knob's rule). Π is the ε-ball
and the [0,1] box. A step takes 1 + K gradients and costs 2K single-model passes (the ensemble's
gradient is K, each member's one), the unit ``budget=B`` counts for every method. As
TransferAttack's ``ensemble/cwa.py`` with ``random_start=False`` (flatbench starts every attack
at δ = 0), except that the outer momentum normalises each image's δ' − δ by its own L1 norm
where the port divides by the whole batch's: here an image's result does not depend on its batch
mates, and one image at a time is the port bit for bit in 8 bits (tested). The port's β = 50
argument is never read by its forward, so there is no such setting here.
""")
class CWA(Estimator):
    def __init__(self, r: float = 16 / 255 / 15, inner_step: float = 250.0, inner_decay: float = 1.0,
                 members=None):
        self.r, self.inner_step, self.inner_decay, self.members = r, inner_step, inner_decay, members
        self.check()

    def __call__(self, ctx, x, y):
        k = members_of(ctx, self.members, "CWA")
        origin, threat = ctx.origin, ctx.threat
        delta = x - origin
        g = ctx.grad(x, y, [("g",)])
        inner = threat.project(threat.step(delta, g, -self.r), origin)      # the sharpness-aware descent step
        v = ctx.state.get("cwa_v", torch.zeros_like(x))
        for member in range(k):
            gk = ctx.grad(origin + inner, y, [("g", "member", member)], member=member)
            v = self.inner_decay * v + l2_normalize(gk)
            inner = threat.project(inner + self.inner_step * v, origin)
        ctx.state["cwa_v"] = v.detach()
        return inner - delta

    def evals_per_image(self, step):
        if self.members is None:
            raise ConfigError("estimator.members is null: CWA's step takes 1 + K gradients, K the surrogate "
                              "ensemble's models; build it with its ensemble (create_attack('cwa', Ensemble([...])), "
                              "surrogate=[a,b,...])")
        return 1 + self.members

    def passes_per_image(self, step, members=1):
        return self.evals_per_image(step) - 1 + members   # K member gradients and one of the whole ensemble

    def describe(self, threat, alpha):
        k = "K" if self.members is None else str(self.members)
        return [f"g = ∇ℓ_ens(x_eval);  δ' = Π(δ − r·{'sign(g)' if threat.name == 'linf' else 'g/‖g‖₂'}),  "
                f"r = {self.r * 255:g}/255",
                f"for k = 1..{k} (each model of the ensemble alone):",
                f"    v ← {self.inner_decay:g}·v + ∇ℓ_k(x + δ')/‖∇ℓ_k(x + δ')‖₂   (v = 0 before the first step, kept across steps)",
                f"    δ' = Π(δ' + {self.inner_step:g}·v)   (Π: the ε-ball and the [0,1] box)",
                "g = δ' − δ"]
