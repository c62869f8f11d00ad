"""The surrogate's forward pass as the loop takes it: the input transforms (each group of images
with its own keyed draw), the memory format, autocast, and, for an estimator that tunes the
surrogate's weights (AWT), weights other than the model's own, passed by ``torch.func.functional_call``
so that the model's own parameters are never written."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn


class NonFiniteError(FloatingPointError):
    """A gradient or a model output held NaN or Inf."""


def transformed(transforms: Sequence, copies: int, z: torch.Tensor, y: torch.Tensor, gens: List[torch.Generator],
                sizes: Optional[List[int]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """z through the input transforms, one group per generator (of ``sizes`` images, else equal
    groups), and the labels repeated to follow each group's copy-major views."""
    if not transforms:
        return z, y
    groups = z.split(sizes) if sizes else z.chunk(len(gens)) if len(gens) > 1 else [z]
    outs = []
    for zg, gen in zip(groups, gens):
        for t in transforms:
            zg = t(zg, gen)
        outs.append(zg)
    yg = y.split(sizes) if sizes else y.chunk(len(gens)) if len(gens) > 1 else [y]
    return (torch.cat(outs) if len(outs) > 1 else outs[0]), torch.cat([v.repeat(copies) for v in yg])


def logits(model: nn.Module, z: torch.Tensor, memory_format: Optional[str], amp: Optional[str],
           weights: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """The model's outputs for z, in the attack's memory format and autocast; ``weights`` (name →
    tensor, a subset of the model's parameters) replace the model's own for this forward only."""
    if memory_format == "channels_last" and z.dim() == 4:
        z = z.contiguous(memory_format=torch.channels_last)

    def run():
        return model(z) if weights is None else torch.func.functional_call(model, weights, (z,))

    if amp:
        with torch.autocast(device_type=z.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16):
            return run()
    return run()


def weight_grad(attack, inputs: Sequence[torch.Tensor], y: torch.Tensor, gens: List[torch.Generator], step: int,
                weights: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """∇_w Σ_j ℓ̄(inputs[j]) at the surrogate weights ``weights`` (name → tensor), ℓ̄ the batch's mean loss
    through the attack's input transforms (input j drawn with ``gens[j]``; negated when targeted): the
    loss AWT's weight tuning descends. Parameters the loss does not reach are left out. Each input
    counts its images in the attack's ``grad_evals``, as an input gradient does."""
    with torch.enable_grad():
        w = {k: v.detach().requires_grad_(True) for k, v in weights.items()}
        total = 0.0
        for x, gen in zip(inputs, gens):
            z, yz = transformed(attack.transforms, attack.copies, x.detach(), y, [gen])
            out = logits(attack.model, z, attack.memory_format, attack.amp, w)
            if attack.check_finite and not torch.isfinite(out).all():
                raise NonFiniteError(f"non-finite model output at step {step + 1} (weight tuning)")
            loss = attack.loss(out, yz) / attack.copies / x.shape[0]
            total = total + (-loss if attack.targeted else loss)
            attack.grad_evals += z.shape[0]
        if not w:   # a model without parameters: nothing to tune (the passes ran, and are counted)
            return {}
        grads = torch.autograd.grad(total, list(w.values()), allow_unused=True)
    return {k: g for k, g in zip(w, grads) if g is not None}
