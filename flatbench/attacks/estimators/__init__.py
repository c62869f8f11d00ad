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
``emi``     EMI-FGSM: the sum of the gradients at N points x + c_i·α·d along the previous step's
            normalised average gradient d (a sampling control: no flatness term).
``gaa``     GAA: the mean over N neighbours x' in U(±ξ·ε) of (1−λ)·∇ℓ(x') + (1+λ)·∇ℓ(x' + ρ·g'/‖g'‖₁);
            ``gaa_ta`` as TransferAttack's port runs it, with the second gradient counted twice.
``fgsra``   FGSRA: GRA's mix of ∇ℓ(x) and its neighbours, the neighbours moved in the frequency domain
            (IDCT(DCT(x + u_i) ⊙ M_i)) and weighted by their cosine with x.
``awt``     AWT: PGN's gradient through surrogate weights that one SAM step tunes at every step, on the
            losses at x + δ and x (a copy of the weights, from the model's own at each call);
            ``awt_ta`` as TransferAttack's port runs it, the last step's weight gradient carried.
``cwa``     CWA: across the surrogate ensemble, a sharpness-aware descent step of r, then one
            normalised ascent step per member; the update is where they led (needs an Ensemble).
``members`` The mean of the ensemble members' gradients, each alone (``normalize=l1``: each divided by
            its L1 norm first): CWA's baselines, member balance without flatness.
``anda``    ANDA: the running mean, over all steps so far, of the gradients of a 5×5 grid of
            translated views (the mean of the learned asymptotically normal distribution).

The N neighbours are independent, so they are evaluated together, N·B images at a time in
chunks sized by the attack's ``chunk``. Every random draw is keyed by (step, neighbour),
and neighbours are summed in index order, so the chunk size changes memory and speed only.

One module per family, as TransferAttack's ``gradient/`` folder has one file a method; importing them
here, in this order, registers the estimators in the order ``flatbench list`` prints them.
"""
from flatbench.attacks.estimators.base import ESTIMATORS, SAMPLES, STEPS, Estimator, Plain, uniform_noise
from flatbench.attacks.estimators.vmi import Variance
from flatbench.attacks.estimators.penalty import COMBINE, LOOKAHEADS, NORMALIZE, Penalty
from flatbench.attacks.estimators.rap import INNER_LOSSES, RAP
from flatbench.attacks.estimators.gra import GRA, LABEL_BY
from flatbench.attacks.estimators.mef import MEF
from flatbench.attacks.estimators.anda import ANDA
from flatbench.attacks.estimators.emi import EMI, SAMPLING
from flatbench.attacks.estimators.gaa import AGGREGATION, GAA
from flatbench.attacks.estimators.fgsra import FGSRA
from flatbench.attacks.estimators.awt import AWT, sam_step
from flatbench.attacks.estimators.cwa import CWA
from flatbench.attacks.estimators.members import MEMBER_NORMALIZE, MemberMean

__all__ = ["ESTIMATORS", "SAMPLES", "STEPS", "Estimator", "Plain", "uniform_noise", "Variance", "COMBINE", "LOOKAHEADS",
           "NORMALIZE", "Penalty", "INNER_LOSSES", "RAP", "GRA", "LABEL_BY", "MEF", "ANDA", "EMI", "SAMPLING", "GAA", "AGGREGATION", "FGSRA", "AWT", "sam_step", "CWA",
           "MEMBER_NORMALIZE", "MemberMean"]
