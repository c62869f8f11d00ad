"""Models by name. A name is an embedded testbed model (``digits-cnn``), a timm name with its
pretrained tag (``resnet50.tv_in1k``), a torchvision builder with its weights enum
(``torchvision:resnet50.IMAGENET1K_V2``) or an architecture with a local checkpoint
(``resnet50.tv_in1k@/path/w.safetensors``). Every model returned takes [0,1] images at the
data set's resolution and is frozen in eval mode."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch.nn as nn

from .defenses import DEFENSES, defend
from .hub import MissingWeightsError, load_hub_model, parse_name, read_checkpoint, weights_cached
from .testbed import TESTBED, load_testbed
from .wrap import Ensemble, Preprocess, freeze

__all__ = ["load_model", "load_surrogate", "Ensemble", "Preprocess", "freeze", "TESTBED",
           "DEFENSES", "defend", "MissingWeightsError", "parse_name", "read_checkpoint", "weights_cached"]


def load_model(name: str, *, zoo_dir: Optional[Path] = None, seed: int = 0, progress: bool = True,
               pretrained: bool = True, label_offset: Optional[int] = None, num_classes: Optional[int] = None,
               input_size: Optional[int] = None, defense: Optional[dict] = None, preprocess: str = "own") -> nn.Module:
    """The model ``name`` (see the module docstring), optionally behind a ``defense``."""
    if name in TESTBED:
        model = load_testbed(name, zoo_dir=zoo_dir, seed=seed, progress=progress)
    else:
        model = load_hub_model(name, pretrained=pretrained, label_offset=label_offset, num_classes=num_classes,
                               input_size=input_size, preprocess=preprocess)
    return freeze(defend(model, defense, name=name)) if defense else model


def load_surrogate(names: Union[str, Sequence[str]], **kw) -> nn.Module:
    """One model, or the logit-averaging ensemble of a list of names."""
    from ..registry import ConfigError

    if isinstance(names, str):
        return load_model(names, **kw)
    names = list(names)
    if not names:
        raise ConfigError("surrogate: the list of surrogate models is empty")
    if len(names) == 1:
        return load_model(names[0], **kw)
    return Ensemble([load_model(n, **kw) for n in names])
