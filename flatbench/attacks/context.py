"""What the loop hands an estimator at one step (:class:`StepContext`), and nothing more of the attack."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import torch

from flatbench.core.keyed import keyed_generator


@dataclass
class StepContext:
    """What an estimator may use at step ``step``, and nothing more of the attack: keyed
    randomness, the chunk, the threat model and ∇ℓ through the input transforms."""

    seed: Hashable
    step: int
    alpha: float
    threat: Any
    loss_grad: Callable[..., torch.Tensor]  # (x, y, generators, step) -> ∇ℓ, see Attack.loss_grad
    device: torch.device
    chunk: Optional[int]     # most images in one forward (None: no limit)
    copies: int = 1          # images one input makes through the input transforms
    state: Dict = field(default_factory=dict)   # the estimator's own, across the steps of one call
    targeted: bool = False   # ℓ is −CE(target): ∇ℓ points away from the target
    predict: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # x -> the surrogate's classes (no gradient)
    origin: Optional[torch.Tensor] = None   # the clean images of the batch (CWA's inner steps stay in their ε-ball)
    members: int = 0         # the surrogate ensemble's models (0: one model, not an Ensemble)
    # Batches crafted together in one forward (packing): (each batch's seed, its images), in the
    # order they are stacked in x; None for one batch, keyed by ``seed``.
    packed: Optional[Tuple[Tuple[Hashable, int], ...]] = None
    # The surrogate's weights, for an estimator that tunes them (AWT): where its tuning starts
    # (a copy of the model's own), the gradient of the batch-mean loss in weight space (see
    # Attack.weight_grad), and the weights ``grad`` takes the input gradient at (None: the model's own).
    surrogate_weights: Optional[Callable[[], Dict[str, torch.Tensor]]] = None
    weight_grad: Optional[Callable[..., Dict[str, torch.Tensor]]] = None
    weights: Optional[Dict[str, torch.Tensor]] = None

    def rng(self, *key: Hashable) -> torch.Generator:
        if self.packed is not None:   # one generator would draw across the batches: not what each draws alone
            raise RuntimeError(f"a batch-wide draw {key!r} in a packed call: only estimators that draw nothing "
                               "themselves (packable) may be packed")
        return keyed_generator((self.seed, self.step) + key, self.device)

    def chunks(self, n: int, b: int) -> List[Tuple[int, int]]:
        """Split n neighbours of a batch of b images so one forward holds ≤ ``chunk`` images.

        The chunk is the attack's ``chunk`` setting (``"auto"``: by rule, ``"measure"``: the fastest timed size),
        lowered to fit ``memory_budget_mb``. Noise is keyed per neighbour, so the split never
        changes the draws; it changes speed, memory and the kernels' summation order (see
        :mod:`.sizing`), which is why the default is a rule, not a timing.
        """
        per = n if self.chunk is None else max(1, self.chunk // (b * self.copies))
        return [(lo, min(n, lo + per)) for lo in range(0, n, per)]

    def weights_grad(self, inputs: Sequence[torch.Tensor], y: torch.Tensor, keys: Sequence[Tuple[Hashable, ...]],
                     weights: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """∇_w of Σ_j ℓ̄(inputs[j]) at ``weights``, ℓ̄ the batch-mean loss through the input transforms,
        input j's transforms drawn with the key ``keys[j]``."""
        return self.weight_grad(inputs, y, [self.rng("tf", *k) for k in keys], self.step, weights)

    def grad(self, x: torch.Tensor, y: torch.Tensor, keys: Sequence[Tuple[Hashable, ...]],
             before: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, member: Optional[int] = None) -> torch.Tensor:
        """∇ℓ at x, ℓ taken through the input transforms; x holds len(keys) groups of equal size.

        ``before``: a differentiable map of the estimator's own, applied to x ahead of the
        input transforms (ANDA's translated views), so the gradient is taken through it too.
        ``member``: the loss of that model of the surrogate ensemble alone (CWA's inner steps).
        """
        if self.packed is None:
            return self.loss_grad(x, y, [self.rng("tf", *k) for k in keys], self.step, before, member, weights=self.weights)
        # Packed: each group holds every batch in turn, and each batch draws its transforms with its own key.
        gens = [keyed_generator((seed, self.step, "tf", *k), self.device) for k in keys for seed, _ in self.packed]
        return self.loss_grad(x, y, gens, self.step, before, member, [n for _ in keys for _, n in self.packed],
                              weights=self.weights)


class Paused(Exception):
    """Raised between steps when ``pause()`` asked: ``state`` is everything the next step needs (the
    step, δ, the optimizer's and the estimator's state, the examples kept so far), so that
    ``trajectory(..., resume=state)`` continues to the images an uninterrupted call returns."""

    def __init__(self, state: Dict):
        super().__init__(f"paused before step {state['step'] + 1}")
        self.state = state


def state_to(state, device):
    """A part's state (tensors in dicts, lists and tuples) on ``device``."""
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: state_to(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(state_to(v, device) for v in state)
    return state
