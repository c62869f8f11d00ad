"""The embedded testbed: scikit-learn's bundled handwritten digits (1,797 real 8×8 images).

The 8×8 originals are upsampled (bilinear) to ``image_size`` (32 by default): at 8×8 there
is no room for the spatial structure DIM, TIM and convolutional surrogates rely on, and 32×32
is the CIFAR scale on which transfer studies are commonly run. Images are quantised to
8 bits after resizing, so the clean inputs are exactly what an 8-bit PNG would store. The
split is stratified and fixed by ``split_seed``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from flatbench.core.registry import ConfigError
from flatbench.data.base import DATASETS, ImageSet

NUM_CLASSES = 10


@lru_cache(maxsize=8)
def _load(image_size: int, test_fraction: float, split_seed: int) -> Tuple[ImageSet, ImageSet]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.from_numpy(d.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=d.target, random_state=split_seed)
    tr, te = np.sort(tr), np.sort(te)
    meta = {"image_size": image_size, "test_fraction": test_fraction, "split_seed": split_seed}

    def make(split, ii):
        return ImageSet(f"digits-{split}", x[ii], y[ii], [f"digit{i:04d}" for i in ii], NUM_CLASSES, None, dict(meta, split=split))

    return make("train", tr), make("test", te)


def load_split(split: str = "test", image_size: int = 32, test_fraction: float = 0.3, split_seed: int = 0) -> ImageSet:
    if split not in ("train", "test"):
        raise ConfigError(f"data.split must be 'train' or 'test', got {split!r}")
    if image_size < 8:
        raise ConfigError(f"data.image_size must be >= 8, got {image_size}")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
    train, test = _load(int(image_size), float(test_fraction), int(split_seed))
    return train if split == "train" else test


@DATASETS.register("digits")
def digits(split: str = "test", image_size: int = 32, test_fraction: float = 0.3, split_seed: int = 0) -> ImageSet:
    """scikit-learn digits, stratified 70/30 split, upsampled to 32×32 (1 channel, 10 classes)."""
    return load_split(split, image_size, test_fraction, split_seed)
