"""Models by name. A name is an embedded testbed model (``digits-cnn``) or, with the
ImageNet path, a timm / torchvision name or a checkpoint path. Every model returned takes
[0,1] images and is frozen in eval mode."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch.nn as nn

from ..registry import ConfigError, suggest
from .testbed import TESTBED, load_testbed
from .wrap import Ensemble, Preprocess, freeze

__all__ = ["load_model", "load_surrogate", "model_names", "Ensemble", "Preprocess", "freeze", "TESTBED"]


def model_names() -> list:
    return sorted(TESTBED)


def load_model(name: str, *, zoo_dir: Optional[Path] = None, seed: int = 0, progress: bool = True) -> nn.Module:
    if name in TESTBED:
        return load_testbed(name, zoo_dir=zoo_dir, seed=seed, progress=progress)
    raise ConfigError(f"unknown model {name!r}. Valid choices: {', '.join(model_names())}.{suggest(name, model_names())}")


def load_surrogate(names: Union[str, Sequence[str]], **kw) -> nn.Module:
    """One model, or the logit-averaging ensemble of a list of names."""
    if isinstance(names, str):
        return load_model(names, **kw)
    names = list(names)
    if not names:
        raise ConfigError("surrogate: the list of surrogate models is empty")
    if len(names) == 1:
        return load_model(names[0], **kw)
    return Ensemble([load_model(n, **kw) for n in names])
