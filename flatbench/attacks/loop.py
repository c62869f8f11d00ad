"""The one attack loop. Every method in flatbench is this loop with different parts:

    for t in 1..T:
        x_eval = optimizer.eval_point(x + δ)       # NI: the Nesterov point x + δ + α·μ·m (L2: an L2 move of α·μ); others: x + δ
        g = estimator(x_eval)                       # plain ∇ℓ | PGN/GNP penalty | VMI | RAP | GRA | MEF | ANDA
                                                    #   ℓ through the input transforms
        g = filter(g)                               # TIM, else identity
        m = optimizer.update(m, g)                  # I-FGSM: g | MI/NI: μ·m + g/mean|g|
        α_t = optimizer.step_size(α)                # α; GRA's decay indicator: a per-pixel M ⊙ α
        δ = project(δ + α_t·step(m))                # L∞: sign(m); L2: m/‖m‖₂; then ball and box

An estimator may keep state across steps (VMI's v, MEF's inner momentum, ANDA's running mean)
in ``ctx.state``; the optimizer keeps its own (the momentum m, GRA's M) in another dict. Each is
one dict per call and per part: no part reads or writes another's.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, Hashable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from flatbench.core.registry import ConfigError, check_range
from flatbench.core.units import api_length
from flatbench.attacks import sizing
from flatbench.attacks.checks import check_loop_settings, check_part_lengths, check_snapshots
from flatbench.attacks.context import Paused, StepContext, state_to
from flatbench.attacks.model_state import borrowed, deterministic_kernels, ensemble_members, per_step_models
from flatbench.attacks.estimators import Estimator, Plain
from flatbench.attacks.forward import NonFiniteError, logits, transformed, weight_grad
from flatbench.attacks.optimizers import Optimizer
from flatbench.attacks.packing import check_packed
from flatbench.attacks.parts import Part, method_label
from flatbench.attacks.threat import THREATS
from flatbench.attacks.transforms import GradientFilter, InputTransform


def _cross_entropy_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # A sum, not a mean: each example's gradient must not depend on the batch it shares.
    return F.cross_entropy(logits.float(), y, reduction="sum")


class Attack:
    """An iterative sign-gradient attack assembled from parts; see the module docstring.

    Args:
        model: maps [0,1] images (NCHW) to logits. Borrowed for each call (see
            :mod:`.model_state`): attacked in eval mode with frozen parameters, then handed back
            exactly as it came (every submodule's mode, ``requires_grad``, weights, statistics,
            memory format, device), also when the attack raises.
        eps: radius of the threat ball, in [0,1] pixel units (16/255 for ImageNet papers).
        steps: T, the number of iterations (10).
        alpha: step size; None means eps/steps.
        norm: "linf" or "l2".
        targeted: ascend −CE(target) instead of CE(label); ``y`` then holds target classes.
        estimator: the gradient the loop follows (None: the plain gradient). Parameters whose
            null stands for α (PGN's r) are bound to ``alpha`` on a copy of the part; the part
            passed in is not changed.
        optimizer: the update rule (None: I-FGSM).
        transforms: input transforms and gradient filters alike (TIM), as the config group holds
            them; the loop applies each where it acts (None: none).
        chunk: most images in one forward/backward: "auto" (the default: by rule, the
            largest power of two whose activations fit a share of the device's total memory,
            see :mod:`.sizing`), "measure" (the fastest size, timed once per
            architecture, input shape and device), an integer, or None (all N·B at once).
        memory_budget_mb: lowers the chunk so that one forward/backward's saved activations
            fit this many MiB (counted with saved-tensor hooks, per image).
        amp: None, or "bf16"/"fp16" autocast of the surrogate's forward (CUDA; bf16 also CPU).
        channels_last: the surrogate's memory format: "auto" (the default: by rule,
            channels_last on a CPU, contiguous on CUDA), "measure" (channels_last when timed more than 3%
            faster), True or False. The model's 4-D weights are converted for the call and
            restored after it. The resolved chunk and format are ``chunk`` and ``memory_format``.
        tuning_file: a JSON file that keeps "measure" choices across processes, under a lock
            (None: ``$FLATBENCH_TUNING_FILE``, else this process only).
        check_finite: stop with :class:`NonFiniteError` when a gradient is NaN or Inf.
        loss: ``loss(outputs, y)`` summed over the batch (None: cross-entropy). The loop
            ascends it (descends it when targeted).

    Example: ``x_adv = Attack(model, eps=16/255, optimizer=Momentum())(x, y)``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        steps: int = 10,
        alpha: Optional[float] = None,
        norm: str = "linf",
        targeted: bool = False,
        estimator: Optional[Estimator] = None,
        optimizer: Optional[Optimizer] = None,
        transforms: Sequence[Part] = (),
        chunk="auto",
        memory_budget_mb: Optional[float] = None,
        amp: Optional[str] = None,
        channels_last="auto",
        tuning_file=None,
        check_finite: bool = True,
        loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
        name: Optional[str] = None,
    ):
        # A fraction of [0,1] here; "16/255" is read as written, and 16 (1/255 units) is refused (flatbench/core/units.py).
        eps, alpha = api_length("eps", eps, norm), api_length("alpha", alpha, norm)
        check_range("eps", eps, eps > 0, "eps > 0 ([0,1] pixel units)")
        if alpha is not None:
            check_range("alpha", alpha, alpha > 0, "alpha > 0 ([0,1] pixel units) or None for eps/steps")
        check_loop_settings(steps=steps, norm=norm, chunk=chunk, memory_budget_mb=memory_budget_mb, amp=amp,
                            channels_last=channels_last)
        self.model = model
        self.eps, self.steps = float(eps), int(steps)
        knob = getattr(getattr(estimator, "declaration", None), "cost", None)
        self.alpha = float(alpha) if alpha is not None else getattr(knob, "travel", 1.0) * self.eps / self.steps
        self.norm, self.threat = norm, THREATS[norm](self.eps)
        self.targeted = bool(targeted)
        check_loop = getattr(estimator, "check_loop", None)
        if check_loop is not None:   # a setting that needs the loop's own (GRA's clean-prediction labels)
            check_loop(targeted=self.targeted)
        self.estimator = (estimator if estimator is not None else Plain()).bind(self.alpha)
        self.optimizer = (optimizer if optimizer is not None else Optimizer()).bind(self.alpha)
        for t in transforms:
            if not isinstance(t, (InputTransform, GradientFilter)):
                raise TypeError(f"transforms: {t!r} is neither an input transform nor a gradient filter")
        self.transforms = [t.bind(self.alpha) for t in transforms if isinstance(t, InputTransform)]
        self.filters = [t.bind(self.alpha) for t in transforms if isinstance(t, GradientFilter)]
        if norm == "linf":   # a part's length above the whole range is 1/255 units (flatbench/core/units.py)
            check_part_lengths((self.optimizer, self.estimator, *self.transforms, *self.filters))
        self.amp = amp
        # How the work is sized (the chunk, the memory format): sizing.Sizing, apart from the loop.
        self.sizing = sizing.Sizing(chunk, memory_budget_mb, channels_last, amp, tuning_file)
        self.chunk: Optional[int] = None  # the chunk in force for the current call (resolved from chunk_setting)
        self.check_finite = check_finite
        self.loss = loss if loss is not None else _cross_entropy_sum
        self.copies = 1
        for t in self.transforms:
            self.copies *= t.copies
        self.name = name or self.label
        self.grad_evals = 0  # images through forward+backward, counted for the benchmarks
        self.budget: Optional[Dict] = None  # what budget=B resolved to (flatbench.attacks.budget), for describe
        self.device_of_last_call = torch.device("cpu")
        self._cycle_start = 0  # an LGV surrogate's place in its cycle for the current call

    @property
    def label(self) -> str:
        """The method's name, from the parts' declarations (:func:`.parts.method_label`), with the
        estimator's own label (a setting may name a variant: RAP-OC, GRA-OC)."""
        est = replace(self.estimator.declaration, label=self.estimator.label)
        return method_label(self.optimizer.declaration, est, [p.declaration for p in (*self.transforms, *self.filters)])

    def predicted_grad_evals(self, n_images: int, steps: Optional[int] = None) -> int:
        """The single-model forward+backward passes (an ensemble's gradient is one per member) when
        this attack crafts ``n_images`` images: each step's passes per image (the estimator's count)
        times the input transforms' copies. Equal to ``grad_evals`` after the call (tested per preset).
        ``steps``: what had been spent after that many steps (a snapshot's cost)."""
        last = self.steps if steps is None else steps
        k = len(ensemble_members(self.model)) or 1
        return n_images * self.copies * sum(self.estimator.passes_per_image(t, k) for t in range(last))

    def describe(self) -> str:
        """The assembled loop, written out from the parts with their values: what this attack
        computes, on one screen (``flatbench describe METHOD`` prints it; :mod:`.describe`)."""
        from flatbench.attacks.describe import describe

        return describe(self)

    def loss_grad(self, x: torch.Tensor, y: torch.Tensor, gens: List[torch.Generator], step: int,
                  before: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, member: Optional[int] = None,
                  sizes: Optional[List[int]] = None, weights: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        # Callers often hold no_grad (evaluation code, notebooks); the input gradient needs autograd.
        with torch.enable_grad():
            # detach() gives a new leaf sharing storage: no copy, and the caller's tensor is untouched.
            return self._loss_grad(x.detach().requires_grad_(True), y, gens, step, before, member, sizes, weights)

    def _loss_grad(self, x, y, gens, step, before=None, member=None, sizes=None, weights=None) -> torch.Tensor:
        """∇ℓ at x; x holds one group per generator (of ``sizes`` images, else equal groups);
        ``weights``: the surrogate's parameters to use instead of its own (AWT's tuned ones)."""
        model = self._step_model(step) if member is None else ensemble_members(self.model)[member]
        z = x if before is None else before(x)
        z, y = transformed(self.transforms, self.copies, z, y, gens, sizes)
        out = logits(model, z, self.memory_format, self.amp, weights)
        if self.check_finite and not torch.isfinite(out).all():
            raise NonFiniteError(f"non-finite model output at step {step + 1}")
        loss = self.loss(out, y) / self.copies
        if self.targeted:
            loss = -loss
        (g,) = torch.autograd.grad(loss, x)
        # single-model passes: an ensemble's gradient is one per member (CWA's member gradients, one each)
        self.grad_evals += z.shape[0] * ((len(ensemble_members(model)) or 1) if member is None else 1)
        if self.check_finite and not torch.isfinite(g).all():
            raise NonFiniteError(f"non-finite gradient at step {step + 1} (loss {loss.item():.4g})")
        return g

    def weight_grad(self, inputs: Sequence[torch.Tensor], y: torch.Tensor, gens: List[torch.Generator], step: int,
                    weights: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """∇_w of the inputs' summed batch-mean losses at ``weights``: see :func:`.forward.weight_grad`."""
        return weight_grad(self, inputs, y, gens, step, weights)

    def surrogate_weights(self) -> Dict[str, torch.Tensor]:
        """A copy of the surrogate's parameters (name → tensor): where AWT's tuning starts."""
        if per_step_models(self.model) is not None:
            raise ConfigError("AWT tunes one surrogate's weights; a collected set (LGV) already changes the weights "
                              "at every step: use a single model or an Ensemble")
        return {k: p.detach().clone() for k, p in self.model.named_parameters()}

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: Hashable = 0,
                 partners: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return x_adv in [0,1] with ‖x_adv − x‖ ≤ eps; ``seed`` keys every random draw.

        ``partners``: other images ([0,1]) that a mixing transform (Admix) may draw from when
        ``x`` holds a single image; batches of two or more mix within the batch.
        """
        return self.trajectory(x, y, (), seed, partners)[self.steps]

    def trajectory(self, x: torch.Tensor, y: torch.Tensor, at: Sequence[int] = (), seed: Hashable = 0,
                   partners: Optional[torch.Tensor] = None, until: Optional[int] = None,
                   pause: Optional[Callable[[], bool]] = None, resume: Optional[Dict] = None,
                   packed: Optional[Sequence] = None) -> Dict[int, torch.Tensor]:
        """The examples after the steps ``at`` (1-based) and after the last: ``{t: x_t, ..., T: x_T}``.

        One run of the attack: x_t is what the same attack with T = t (and the same α) returns,
        bit for bit, because every draw is keyed by its step and nothing looks ahead (tested for
        MI-FGSM). ``until``: stop after that step, without the later ones (a cell whose final set
        is stored crafts only as far as the snapshots it lacks). ``pause``: asked after each step
        but the last; when it returns True the call raises :class:`Paused` with the state, which
        ``resume`` takes back (a requeued job continues a batch where the last one stopped).
        ``packed``: x stacks several batches, ``[(seed, images), ...]``, each drawing with its own
        seed, as if crafted alone (:mod:`.packing`; only a :func:`~.packing.packable` attack).
        """
        at = check_snapshots(at, self.steps)
        last = self.steps if until is None else int(until)
        check_range("until", until, until is None or 1 <= last <= self.steps, f"1 <= until <= steps ({self.steps})")
        own = self.transforms
        if partners is not None:
            self.transforms = [t.with_partners(partners) if hasattr(t, "with_partners") else t for t in own]
        try:
            with borrowed(self.model), deterministic_kernels():
                seed, packed = check_packed(self, x, seed, packed)
                return self._run(x, y, seed, set(at) | {self.steps}, last, pause, resume, packed)
        finally:
            self.transforms = own

    def _run(self, x: torch.Tensor, y: torch.Tensor, seed: Hashable, keep: set, last: int,
             pause: Optional[Callable[[], bool]] = None, resume: Optional[Dict] = None,
             packed: Optional[tuple] = None) -> Dict[int, torch.Tensor]:
        x = x.detach().float()
        y = y.detach().long()
        self.device_of_last_call = x.device
        snaps = per_step_models(self.model)
        self._cycle_start = snaps.start_of(seed) if snaps is not None else 0
        self.chunk = self._resolve(x)  # also puts the (borrowed) model in the chosen memory format
        delta = torch.zeros_like(x)
        # Each part keeps its own state across the steps of this call, and sees no other part's.
        own: Dict = {}          # the optimizer's (MI's m, GRA's M)
        est_state: Dict = {}    # the estimator's (VMI's v, MEF's p, ANDA's running mean, GRA-OC's labels)
        kept: Dict[int, torch.Tensor] = {}
        first = 0
        if resume is not None:   # where a paused call stopped: its state, on this call's device
            first, delta = int(resume["step"]), resume["delta"].to(x.device)
            own, est_state = state_to(resume["optimizer"], x.device), state_to(resume["estimator"], x.device)
            kept = {int(k): v.to(x.device) for k, v in resume["kept"].items()}
        for t in range(first, last):
            if t > first and pause is not None and pause():
                raise Paused({"step": t, "delta": delta, "optimizer": own, "estimator": est_state, "kept": kept})
            ctx = self.step_context(seed, t, est_state, origin=x, packed=packed)
            x_eval = self.optimizer.eval_point(x + delta, own, self.alpha, self.threat)
            g = self.estimator(ctx, x_eval, y)
            for f in self.filters:
                g = f(g)
            m = self.optimizer.update(g, own)
            delta = self.threat.project(self.threat.step(delta, m, self.optimizer.step_size(self.alpha, own)), x)
            if t + 1 in keep:
                kept[t + 1] = (x + delta).clamp(0.0, 1.0).detach()
        return kept

    def step_context(self, seed: Hashable, step: int, state: Optional[Dict] = None,
                     origin: Optional[torch.Tensor] = None, packed: Optional[tuple] = None) -> StepContext:
        """What the estimator gets at ``step`` (the chunk and device of the current call)."""
        return StepContext(seed, step, self.alpha, self.threat, self.loss_grad, self.device_of_last_call, self.chunk,
                           self.copies, state if state is not None else {}, self.targeted, self.predict, origin,
                           len(ensemble_members(self.model)), packed, self.surrogate_weights, self.weight_grad)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The surrogate's class for each image of x, without the input transforms: a forward
        pass without gradient, not counted in ``grad_evals`` (RAP's and GRA's official labels)."""
        with torch.no_grad():
            return logits(self.model, x, self.memory_format, self.amp).argmax(1)

    # ---------------------------------------------------------------- sizing (sizing.Sizing)
    chunk_setting = property(lambda self: self.sizing.chunk_setting)
    memory_budget_mb = property(lambda self: self.sizing.memory_budget_mb)
    channels_last = property(lambda self: self.sizing.channels_last)
    tuning_file = property(lambda self: self.sizing.tuning_file)
    pinned = property(lambda self: self.sizing.pinned)
    memory_format = property(lambda self: self.sizing.memory_format,
                             doc="the surrogate's memory format in force, settled on the first call")

    def bytes_per_image(self, x: torch.Tensor) -> int:
        """Memory one image needs in a forward/backward (see :func:`.sizing.bytes_per_image`)."""
        return self.sizing.bytes_per_image(self.model, x)

    def resolved_chunk(self, x: torch.Tensor) -> Optional[int]:
        """The most images per forward for inputs like ``x`` (chunk: by rule with "auto",
        timed with "measure", lowered to fit the memory budget); also settles ``memory_format``.
        The model is borrowed meanwhile, and handed back as it came."""
        with borrowed(self.model):
            return self._resolve(x)

    def _resolve(self, x: torch.Tensor) -> Optional[int]:
        snaps = per_step_models(self.model)
        if snaps is None:
            return self.sizing.resolve(self.model, self.loss, x)
        # One forward goes through one collected model: size the work on one, then put them all in its format.
        chunk = self.sizing.resolve(snaps.at(0), self.loss, x)
        sizing.set_memory_format(snaps, self.memory_format == "channels_last")
        return chunk

    def _step_model(self, step: int) -> nn.Module:
        """The model step ``step`` takes its gradient through: the surrogate, or for an LGV set
        (:class:`~flatbench.models.collected.CollectedModels`) the collected model of that step of this batch's window."""
        snaps = per_step_models(self.model)
        return self.model if snaps is None else snaps.at(step, self._cycle_start)

    def pin(self, chunk: Optional[int], memory_format: str) -> None:
        """Craft with this chunk and memory format from now on, whatever chunk and
        channels_last say: a resumed cell keeps the choice its first batches were crafted with,
        and the ranks of a torchrun cell take rank 0's."""
        self.sizing.pin(chunk, memory_format)

    def __repr__(self) -> str:
        return f"Attack({self.label}, eps={self.eps:.5g}, steps={self.steps}, alpha={self.alpha:.5g}, norm={self.norm})"
