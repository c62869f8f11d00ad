"""The members' gradients averaged: the ensemble baselines that separate member balance from flatness."""
from __future__ import annotations

import torch

from flatbench.core.registry import ConfigError
from flatbench.attacks.parts import Param
from flatbench.attacks.estimators.base import ESTIMATORS, STEPS, Estimator, members_of

MEMBER_NORMALIZE = ("none", "l1")


@ESTIMATORS.declare("members", "EnsLoss", cost=STEPS, params=(
    Param("normalize", "none", "choice", choices=MEMBER_NORMALIZE),
    Param("members", None, "integer", lambda v: v >= 2, ">= 2 (the ensemble's models; needs an ensemble surrogate: "
          "surrogate=[a,b,...] or create_attack('ens_loss', Ensemble([m1, m2]), ...))",
          null="the surrogate ensemble's size"),
), doc="""The mean of the ensemble members' gradients, each member alone: the baselines for CWA.

A logit-averaged ensemble (the surrogate ``[a,b]`` with any other estimator) lets the member with
the larger logits dominate the gradient; CWA takes each member's gradient separately and L2-
normalises it. These two presets take the same per-member gradients without CWA's flatness
steps, so a study can tell what CWA gains from member balance from what it gains from flatness:

- ``normalize=none`` (``method=ens_loss``, label MI-FGSM+EnsLoss): g = (1/K)·Σ_k ∇ℓ_k(x), the
  gradient of the mean of the members' losses (Liu et al., ICLR 2017, "loss ensemble");
- ``normalize=l1`` (``method=ens_l1``, label MI-FGSM+EnsL1): g = (1/K)·Σ_k ∇ℓ_k(x)/‖∇ℓ_k(x)‖₁,
  per image, so that every member moves the step equally (the normalisation MI-FGSM's momentum
  applies to the whole gradient, applied per member).

Paper symbols → parameters: K, the ensemble's models → ``members`` (null: the surrogate's). A step
costs K single-model passes, as the logit ensemble's gradient does, so at one budget both run the
same T. No public code is ported: each is written from its formula and tested equal to it
(tests/test_flat_family.py).
""")
class MemberMean(Estimator):
    def __init__(self, normalize: str = "none", members=None):
        self.normalize, self.members = normalize, members
        self.check()

    @property
    def label(self) -> str:
        return "EnsL1" if self.normalize == "l1" else "EnsLoss"

    def __call__(self, ctx, x, y):
        k = members_of(ctx, self.members, "estimator=members")
        total = torch.zeros_like(x)
        for member in range(k):   # summed in member order
            g = ctx.grad(x, y, [("g", "member", member)], member=member)
            if self.normalize == "l1":
                g = g / g.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))
            total += g
        return total / k

    def evals_per_image(self, step):
        if self.members is None:
            raise ConfigError("estimator.members is null: a step takes one gradient per member, K the surrogate "
                              "ensemble's models; build it with its ensemble (surrogate=[a,b,...])")
        return self.members

    def passes_per_image(self, step, members=1):
        return self.evals_per_image(step)   # each member's gradient is one pass of one model

    def describe(self, threat, alpha):
        k = "K" if self.members is None else str(self.members)
        each = "∇ℓ_k(x_eval)/‖∇ℓ_k(x_eval)‖₁" if self.normalize == "l1" else "∇ℓ_k(x_eval)"
        return [f"g = (1/{k})·Σ_k {each}   (each model of the ensemble alone)"]
