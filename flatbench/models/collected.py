"""A surrogate of models collected along SGD (LGV), attacked one per step.

Step t of a batch takes its gradient through collected model ``order[(start + t) mod K]``, ``order``
a fixed shuffle and ``start`` a keyed draw per batch; the plain forward (evaluation, ``predict``)
averages the K logits. The sources that load such sets are in :mod:`flatbench.models.lgv`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from flatbench.core.registry import ConfigError


class CollectedModels(nn.Module):
    """K models of one architecture, attacked one per step in a fixed shuffled order (LGV).

    Args:
        models: the collected models, each mapping [0,1] images to logits.
        order: the cycle the steps follow, a permutation of range(K) (None: shuffled by ``seed``,
            as TransferAttack's ``LightEnsemble`` shuffles its list once).
        seed: keys the shuffle when ``order`` is None.
    """

    def __init__(self, models: Sequence[nn.Module], order: Optional[Sequence[int]] = None, seed: int = 0,
                 name: str = "collected-models"):
        super().__init__()
        if not models:
            raise ConfigError("CollectedModels: the list of models is empty")
        self.collected = nn.ModuleList(models)
        k = len(models)
        if order is None:
            order = torch.randperm(k, generator=torch.Generator().manual_seed(int(seed))).tolist()
        if sorted(order) != list(range(k)):
            raise ConfigError(f"CollectedModels: order must be a permutation of 0..{k - 1}, got {list(order)}")
        self.order = tuple(int(i) for i in order)
        self.name = name

    per_step = True   # the attack loop's protocol (flatbench.attacks.model_state.per_step_models)

    def __len__(self) -> int:
        return len(self.collected)

    def start_of(self, seed) -> int:
        """Where a batch keyed ``seed`` starts in the cycle."""
        return cycle_start(seed, len(self))

    def at(self, step: int, start: int = 0) -> nn.Module:
        """The collected model that step ``step`` (0-based) of a batch starting at ``start`` in the cycle attacks."""
        return self.collected[self.order[(start + step) % len(self.order)]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.collected]).mean(0)


def cycle_start(seed, k: int) -> int:
    """Where a batch keyed ``seed`` starts in the cycle of ``k`` collected models (a keyed draw)."""
    from flatbench.core.keyed import keyed_generator

    return int(torch.randint(k, (1,), generator=keyed_generator((seed, "lgv-start"), torch.device("cpu"))))


def collected_models_of(model) -> Optional[CollectedModels]:
    """The CollectedModels surrogate behind ``model`` (also through torch.compile's wrapper), else None."""
    inner = getattr(model, "_orig_mod", model)
    return inner if isinstance(inner, CollectedModels) else None
