"""Adversarially trained testbed models, the testbed's counterparts of the defended columns of
ImageNet transfer tables.

* PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
  Attacks", ICLR 2018): every batch is replaced by its PGD examples (L∞ ball of radius ε, a uniform
  random start, ``steps`` steps of size ``step_size``) against the model being trained. The
  testbed's AT column.
* Ensemble adversarial training (Tramèr et al., "Ensemble Adversarial Training: Attacks and
  Defenses", ICLR 2018): every batch is half clean and half adversarial, the adversarial half an
  FGSM step of size ε from a source drawn per batch among the model being trained and static,
  already trained models. ImageNet's Inc-v3<sub>ens3</sub> and Inc-v3<sub>ens4</sub> are this recipe.

Examples are crafted in [0,1] pixel space (the models take [0,1] images), at the testbed's ε = 32/255
unless the recipe says otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class Adversarial:
    """How a testbed model's training batches are made adversarial; part of its cache key."""

    kind: str                      # "pgd" (Madry et al.) or "ensemble" (Tramèr et al.)
    eps: float = 32.0              # L∞ radius, 1/255 units
    steps: int = 7                 # PGD steps (pgd); FGSM is one step of size eps (ensemble)
    step_size: float = 8.0         # PGD step, 1/255 units
    sources: Tuple[str, ...] = ()  # ensemble: the static models whose FGSM examples it trains on


def _grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        (g,) = torch.autograd.grad(loss, x)
    return g


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, steps: int,
        gen: torch.Generator) -> torch.Tensor:
    """L∞ PGD with a uniform random start (radii in [0,1] units), kept in the ε-ball and the [0,1] box."""
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        adv = adv + step_size * _grad(model, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    return (x + eps * _grad(model, x, y).sign()).clamp(0, 1).detach()


class AdversarialBatches:
    """Turns a clean training batch into the batch a recipe trains on."""

    def __init__(self, recipe: Adversarial, load: Callable[[str], nn.Module], gen: torch.Generator):
        self.recipe, self.gen = recipe, gen
        self.statics: Dict[str, nn.Module] = {n: load(n) for n in recipe.sources}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        r, eps = self.recipe, self.recipe.eps / 255
        if r.kind == "pgd":
            return pgd(model, x, y, eps, r.step_size / 255, r.steps, self.gen), y
        # ensemble: half the batch clean, half FGSM from a source drawn among the model and the statics
        half = len(x) // 2
        sources = [model, *self.statics.values()]
        source = sources[int(torch.randint(len(sources), (1,), generator=self.gen))]
        return torch.cat([x[:half], fgsm(source, x[half:], y[half:], eps)]), y


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 32.0, steps: int = 20,
                    step_size: Optional[float] = None, seed: int = 0, batch: int = 256) -> float:
    """Test accuracy (%) under white-box L∞ PGD-``steps`` at ``eps`` (1/255 units), step ε/4, random start."""
    gen = torch.Generator().manual_seed(seed)
    e, a = eps / 255, (step_size if step_size is not None else eps / 4) / 255
    correct = 0
    for i in range(0, len(x), batch):
        adv = pgd(model, x[i:i + batch], y[i:i + batch], e, a, steps, gen)
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == y[i:i + batch]).sum())
    return 100.0 * correct / len(x)

