"""AWT: PGN's gradient taken through surrogate weights that SAM tunes, step by step, during the attack."""
from __future__ import annotations

from dataclasses import replace
from typing import Dict

import torch

from flatbench.attacks.differences import DIFFERENCES
from flatbench.attacks.estimators.base import ESTIMATORS, SAMPLES
from flatbench.attacks.estimators.penalty import Penalty
from flatbench.attacks.parts import Param

# The SAM passes of one step: the loss at x + δ and at x, at w and at the perturbed w.
SAM_PASSES = 4


def sam_step(weights: Dict[str, torch.Tensor], grad, state: Dict, *, lr: float, rho: float, momentum: float,
             carry_grad: bool) -> Dict[str, torch.Tensor]:
    """One step of SAM (Foret et al., 2021) with SGD and momentum on ``weights`` (name → tensor), as
    TransferAttack's ``SAM`` class in ``model_related/awt.py`` computes it:

        g  = ∇L(w)   (+ the last step's g̃ when ``carry_grad``: the port never zeroes its gradients
                      after the second step, so its next backward adds to them)
        g̃  = ∇L(w + ρ·g/(‖g‖₂ + 1e-12))       ‖g‖₂ over all the weights together
        b  = g̃ at the first step, else μ·b + g̃  (torch.optim.SGD's buffer, dampening 0)
        w ← w − lr·b

    ``grad(weights)`` is ∇L (a dict over the weights it reaches); ``state`` keeps b and g̃ across the
    steps of one call. Returns new tensors; the ones given are not written."""
    g = grad(weights)
    if not g:   # no weight reaches the loss: nothing to tune
        return weights
    if carry_grad and "last" in state:
        g = {k: v + state["last"][k] if k in state["last"] else v for k, v in g.items()}
    norm = torch.norm(torch.stack([v.norm(p=2) for v in g.values()]), p=2)
    scale = rho / (norm + 1e-12)
    g2 = grad({k: (w + g[k] * scale.to(w)) if k in g else w for k, w in weights.items()})
    buf = state.get("buf")
    buf = ({k: v.clone() for k, v in g2.items()} if buf is None
           else {k: (buf[k] * momentum + v) if k in buf else v.clone() for k, v in g2.items()})
    state["buf"], state["last"] = buf, g2
    return {k: (torch.add(w, buf[k], alpha=-lr) if k in buf else w) for k, w in weights.items()}


class AWT(Penalty):
    """Adversarial Weight Tuning; see the declarations of its presets ``awt`` and ``awt_ta`` below."""

    packable = False   # the weights are tuned on the whole batch: an image's result depends on its batch

    def __init__(self, beta: float, r, zeta: float, n_samples: int, sam_lr: float, sam_rho: float, sam_momentum: float,
                 carry_grad: bool, name: str):
        self.sam_lr, self.sam_rho, self.sam_momentum, self.carry_grad = sam_lr, sam_rho, sam_momentum, carry_grad
        super().__init__(beta, r, zeta, n_samples, "descent", name, "mean_abs", "difference")

    def __call__(self, ctx, x, y):
        state = ctx.state
        if "weights" not in state:   # the call's first step: a copy of the surrogate's own weights
            state["weights"], state["sam"] = ctx.surrogate_weights(), {}
        clean = ctx.origin

        def loss_grad(w):   # ∇_w [ℓ̄(x_eval) + ℓ̄(x)], each through its own draw of the input transforms
            loss_grad.calls += 1
            return ctx.weights_grad([x, clean], y, [("sam", loss_grad.calls, "adv"), ("sam", loss_grad.calls, "clean")], w)

        loss_grad.calls = 0
        state["weights"] = sam_step(state["weights"], loss_grad, state["sam"], lr=self.sam_lr, rho=self.sam_rho,
                                    momentum=self.sam_momentum, carry_grad=self.carry_grad)
        return super().__call__(replace(ctx, weights=state["weights"]), x, y)

    def evals_per_image(self, step):
        return super().evals_per_image(step) + SAM_PASSES

    def describe(self, threat, alpha):
        carry = " + g̃ of the last step (the port's gradients are never zeroed)" if self.carry_grad else ""
        return ([f"w ← SAM step on L(w) = ℓ̄(x_eval; w) + ℓ̄(x; w), from the surrogate's weights at t = 1 "
                 f"(lr = {self.sam_lr:g}, ρ_w = {self.sam_rho:g}, momentum {self.sam_momentum:g}):",
                 f"    g = ∇_w L(w){carry};  g̃ = ∇_w L(w + ρ_w·g/‖g‖₂);  b = μ·b + g̃;  w ← w − lr·b",
                 "the input gradient below is taken at the tuned weights w:"]
                + super().describe(threat, alpha))


def _params(carry_grad: bool):
    return (
        Param("beta", 0.5, "number", lambda v: v >= 0, ">= 0"),
        Param("r", None, "number", lambda v: v > 0, "> 0 (a length) or null for r = alpha", length=True, null="alpha"),
        Param("zeta", 3.0, "number", lambda v: v >= 0, ">= 0 (in units of eps; 0: no sampling)"),
        Param("n_samples", 20, "integer", lambda v: v >= 1, ">= 1"),
        Param("sam_lr", 0.002, "number", lambda v: v >= 0, ">= 0 (SGD's learning rate on the weights; 0: no tuning)"),
        Param("sam_rho", 0.005, "number", lambda v: v >= 0, ">= 0 (SAM's radius in weight space)"),
        Param("sam_momentum", 0.5, "number", lambda v: 0 <= v < 1, "in [0, 1)"),
        Param("carry_grad", carry_grad, "bool"),
    )


def _preset(name: str):
    def make(**settings) -> AWT:
        return AWT(name=name, **settings)

    return make


_SYMBOLS = """Paper symbols → parameters: γ (the two-point balance) → ``beta``, α (the look-ahead) → ``r``
(null: α), β (the neighbourhood, in units of ε) → ``zeta``, N → ``n_samples``; SAM's learning
rate, radius and SGD momentum → ``sam_lr``, ``sam_rho``, ``sam_momentum``. Per step: one SAM step
(SGD with momentum) on L(w) = ℓ̄(x + δ; w) + ℓ̄(x; w), the batch-mean losses at the adversarial and
the clean images, descended, so that the surrogate's loss is flatter around the example; then
PGN's gradient at the tuned weights: the mean over N neighbours x' ~ x + δ + U(±ζ·ε) of
(1−γ)·∇ℓ(x') + γ·∇ℓ(x' − α·g'/mean|g'|); MI-FGSM's momentum (μ = 1) and α = ε/T follow. The
tuning starts from the surrogate's own weights at every call, works on a copy of them, and the
model is never written. The weights are tuned on the whole batch, so an image's example depends
on its batch mates (``batch_size`` is in the cell id). Defaults: TransferAttack's
``model_related/awt.py`` for ResNet-50: γ = 0.5, β = 3, N = 20, lr = 0.002, ρ = 0.005, momentum
0.5 (for Inception-v3 its README gives lr = 0.001, ρ = 0.002). A step costs 2N input gradients and
4 weight-gradient passes (each of the two SAM gradients at x + δ and x), counted alike."""

ESTIMATORS.declare("awt", "AWT", _params(False), published_with="mifgsm", cost=SAMPLES, differences=DIFFERENCES["awt"],
                   doc=f"""AWT (Chen et al., AAAI 2025, "Enhancing Adversarial Transferability with Adversarial Weight Tuning"): SAM as written.

{_SYMBOLS}

Each SAM step ascends along that step's own gradient, as SAM is written (Foret et al.). TransferAttack's
class never zeroes the weights' gradients after SAM's second step, so from the second step on its
ascent direction also holds the previous step's gradient: that form is ``awt_ta``.
""")(_preset("awt"))

ESTIMATORS.declare("awt_ta", "AWT-TA", _params(True), published_with="mifgsm", cost=SAMPLES,
                   differences=DIFFERENCES["awt_ta"], doc=f"""AWT as TransferAttack's ``model_related/awt.py`` runs it on one batch: SAM's ascent carries the last step's gradient.

{_SYMBOLS}

Tested equal to a reference written out from that file (its SAM class included), with β = 0 (no
draws) and with its draws replayed. The port also keeps its SGD buffer and its last gradient from
one batch to the next; here every call starts afresh (see the differences).
""")(_preset("awt_ta"))
