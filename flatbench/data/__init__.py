"""Data sets by name. Each yields uint8 CHW images with labels, and optional target classes."""
from __future__ import annotations

from ..registry import Registry
from .base import ImageSet

DATASETS = Registry("data set")

from . import digits, folders  # noqa: E402,F401  (register "digits", "nips17", "transferattack", "imagefolder")

__all__ = ["DATASETS", "ImageSet"]
