"""The in-memory image set every data set produces for the runner."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from flatbench.core.registry import Registry

DATASETS = Registry("data set")


@dataclass
class ImageSet:
    """Images as uint8 NCHW (exactly what is stored, so clean inputs are on the 8-bit grid).

    ``labels`` are the model-space class indices 0..num_classes−1; ``target_classes`` holds the data
    set's own target classes for targeted attacks, or None when it has none.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    ids: List[str]
    num_classes: int
    target_classes: Optional[torch.Tensor] = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be uint8 NCHW, got {self.images.dtype} {tuple(self.images.shape)}")
        if not (len(self.images) == len(self.labels) == len(self.ids)):
            raise ValueError(f"{self.name}: {len(self.images)} images, {len(self.labels)} labels, {len(self.ids)} ids")
        if len(self.images) == 0:
            raise ValueError(f"{self.name}: the selection is empty")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, n: Optional[int]) -> "ImageSet":
        """The first n images (the order is fixed by the data set, so this is deterministic)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"n_images must be >= 1, got {n}")
        t = None if self.target_classes is None else self.target_classes[:n]
        return ImageSet(self.name, self.images[:n], self.labels[:n], self.ids[:n], self.num_classes, t, dict(self.meta))

    def floats(self, idx=slice(None)) -> torch.Tensor:
        return self.images[idx].float() / 255.0

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.images.numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]
