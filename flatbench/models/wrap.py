"""Wrappers that make every model take [0,1] images at the data set's resolution.

Attacks never see normalisation: :class:`Preprocess` resizes to the model's own input
size with its own interpolation, normalises with its own mean and std, and maps the
model's class space to the data set's (``label_offset`` = 1 drops the background class of
1001-class TF ports). Parameters are frozen and the model is in eval mode, so input
gradients are the only ones autograd computes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class Preprocess(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        input_size: Optional[int] = None,
        interpolation: str = "bilinear",
        label_offset: int = 0,
        name: str = "",
    ):
        super().__init__()
        self.model = freeze(model)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.input_size = input_size
        self.interpolation = interpolation
        self.label_offset = int(label_offset)
        self.name = name
        freeze(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and x.shape[-1] != self.input_size:
            kw = {} if self.interpolation in ("nearest", "area") else {"align_corners": False}
            if self.interpolation in ("bilinear", "bicubic") and x.shape[-1] > self.input_size:
                kw["antialias"] = True  # downsizing 299 -> 224 without it aliases, as PIL's resize does not
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=self.interpolation, **kw)
        x = (x - self.mean) / self.std
        logits = self.model(x)
        return logits[:, self.label_offset:] if self.label_offset else logits

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, interpolation={self.interpolation!r}, label_offset={self.label_offset}"


class Ensemble(nn.Module):
    """Averages the logits of several models (the usual ensemble-surrogate attack)."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(models)
        self.name = "+".join(getattr(m, "name", type(m).__name__) for m in models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)
