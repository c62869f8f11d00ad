"""Data sets by name. Each yields uint8 CHW images with labels, and optional target classes."""
from __future__ import annotations

from . import digits, folders  # noqa: F401  (register "digits", "nips17", "transferattack", "imagefolder")
from .base import DATASETS, ImageSet

__all__ = ["DATASETS", "ImageSet"]
