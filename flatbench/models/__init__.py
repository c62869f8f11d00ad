"""Models by name, through the model sources (:mod:`flatbench.models.sources`). A name is an embedded testbed model (``digits-cnn``), a timm name with its
pretrained tag (``resnet50.tv_in1k``), a torchvision builder with its weights enum
(``torchvision:resnet50.IMAGENET1K_V2``) or an architecture with a local checkpoint
(``resnet50.tv_in1k@/path/w.safetensors``). Every model returned takes [0,1] images at the
data set's resolution and is frozen in eval mode."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch.nn as nn

from flatbench.models.defenses import DEFENSES, defend
from flatbench.models.hub import MissingWeightsError, parse_name, read_checkpoint, weights_cached
from flatbench.models.collected import CollectedModels
from flatbench.models.lgv import LgvSource
from flatbench.models.libraries import CheckpointSource, TimmSource, TorchvisionSource
from flatbench.models.sources import SOURCES, ModelSource, TestbedSource, source_of
from flatbench.models.testbed import TESTBED
from flatbench.models.wrap import Ensemble, Preprocess, freeze

__all__ = ["load_model", "load_surrogate", "Ensemble", "CollectedModels", "Preprocess", "freeze", "TESTBED", "SOURCES", "ModelSource",
           "source_of", "DEFENSES", "defend", "MissingWeightsError", "parse_name", "read_checkpoint", "weights_cached"]

# The model sources in resolution order: the first that claims a name owns it; timm claims every
# name, so it is last (flatbench/models/sources.py).
for _source in (TestbedSource(), CheckpointSource(), TorchvisionSource(), TimmSource()):
    SOURCES.add(_source.name, _source, (_source.__doc__ or "").split("\n")[0])
# LGV sets; ahead of checkpoint, which would take lgv:ARCH@DIR for an ARCH@PATH name.
SOURCES.add("lgv", LgvSource(), (LgvSource.__doc__ or "").split("\n")[0], before="checkpoint")


def load_model(name: str, *, zoo_dir: Optional[Path] = None, seed: Optional[int] = None, progress: bool = True,
               pretrained: bool = True, label_offset: Optional[int] = None, num_classes: Optional[int] = None,
               input_size: Optional[int] = None, defense: Optional[dict] = None, preprocess: str = "own") -> nn.Module:
    """The model ``name`` (see the module docstring), optionally behind a ``defense``."""
    model = source_of(name).load(name, zoo_dir=zoo_dir, seed=seed, progress=progress, pretrained=pretrained,
                                 label_offset=label_offset, num_classes=num_classes, input_size=input_size,
                                 preprocess=preprocess)
    return freeze(defend(model, defense, name=name)) if defense else model


def load_surrogate(names: Union[str, Sequence[str]], **kw) -> nn.Module:
    """One model, or the logit-averaging ensemble of a list of names."""
    from flatbench.core.registry import ConfigError

    if isinstance(names, str):
        return load_model(names, **kw)
    names = list(names)
    if not names:
        raise ConfigError("surrogate: the list of surrogate models is empty")
    if len(names) == 1:
        return load_model(names[0], **kw)
    return Ensemble([load_model(n, **kw) for n in names])
