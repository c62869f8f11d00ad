"""Data sets by name. Each yields uint8 CHW images with labels, and optional target classes."""
from __future__ import annotations

from flatbench.data import digits, folders  # noqa: F401  (register "digits", "nips17", "transferattack", "imagefolder")
from flatbench.data.base import DATASETS, ImageSet

__all__ = ["DATASETS", "ImageSet"]
