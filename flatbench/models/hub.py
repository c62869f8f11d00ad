"""ImageNet models by name: what the timm and torchvision sources (models/libraries.py) and local checkpoints share.

Name forms (the zoo configs use all of them):

* ``resnet50.tv_in1k``, ``inception_v3.tf_adv_in1k`` - a timm name with its pretrained tag
  (``timm:`` may prefix it). Preprocessing comes from the tag's ``pretrained_cfg``.
* ``torchvision:resnet50.IMAGENET1K_V2`` - a torchvision builder and its weights enum
  member (``DEFAULT`` allowed). Preprocessing comes from the enum's ``transforms()`` meta.
* ``ARCH@PATH`` - the architecture ARCH (either form above) with weights read from PATH:
  ``.safetensors`` through safetensors, anything else through
  ``torch.load(weights_only=True)``, which refuses pickled code.

Pretrained weights are never fetched silently in an offline run: with ``HF_HUB_OFFLINE=1``
(or ``FLATBENCH_OFFLINE=1``) a weight missing from the cache raises
:class:`MissingWeightsError`, naming the model and ``flatbench fetch-weights``; online,
a hub that cannot be reached (one connection of at most 3 s) or a failed download raises the
same error, naming ``HF_HUB_OFFLINE`` too.
"""
from __future__ import annotations

import abc
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from flatbench.core.registry import ConfigError
from flatbench.models.sources import SOURCES, ModelSource
from flatbench.models.wrap import Preprocess

log = logging.getLogger(__name__)

FETCH_HINT = "fetch it ahead with `flatbench fetch-weights` (same overrides as the run) on a machine with internet"


class MissingWeightsError(ConfigError):
    """Pretrained weights are not in the local cache and cannot be downloaded."""


@dataclass
class ModelSpec:
    """A parsed model name: which library builds it and from which weights."""

    name: str            # the name as written in the config
    library: str         # timm | torchvision
    arch: str            # builder name (timm model name without tag, or torchvision builder)
    tag: Optional[str]   # timm pretrained tag or torchvision weights enum member
    checkpoint: Optional[Path] = None

    @property
    def timm_name(self) -> str:
        return f"{self.arch}.{self.tag}" if self.tag else self.arch

    @property
    def hub(self) -> "Library":
        """The library's source (:class:`TimmSource` or :class:`TorchvisionSource`)."""
        return SOURCES.get(self.library)


def offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "FLATBENCH_OFFLINE"))


def parse_name(name: str) -> ModelSpec:
    """Parse a hub model name (``ARCH@PATH`` too); unknown architectures fail with the closest valid names."""
    raw = name
    checkpoint = None
    if "@" in name:
        name, path = name.split("@", 1)
        checkpoint = Path(path).expanduser()
    hub = SOURCES.get("torchvision") if name.startswith("torchvision:") else SOURCES.get("timm")
    return hub.parse(raw, name, checkpoint)


@dataclass
class Meta:
    """A hub model's preprocessing and label space, from its library's config (nothing is built)."""

    input_size: int
    interpolation: str
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    num_classes: int
    label_offset: int


def model_meta(spec: ModelSpec) -> Meta:
    return spec.hub.meta(spec)


# ---------------------------------------------------------------- weights

def _hf_file(repo_id: str) -> Optional[str]:
    """The cached weights file of a Hugging Face repo, or None."""
    from huggingface_hub import try_to_load_from_cache

    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")
    for fn in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo_id, fn, cache_dir=cache)
        if isinstance(hit, str):
            return hit
    return None


def cached_weights_file(spec: ModelSpec) -> Optional[Path]:
    """The local file holding the pretrained weights of ``spec``, or None when they are not cached."""
    return spec.hub.cached_file(spec)


def _torch_hub_file(url: str) -> Optional[Path]:
    """Where torch.hub keeps the download of ``url``, when it is there."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return path if url and path.exists() else None


def weights_cached(spec: ModelSpec) -> bool:
    """Whether the pretrained weights of ``spec`` are already in the local cache."""
    return cached_weights_file(spec) is not None


def read_checkpoint(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict from a file: safetensors, or ``torch.load(weights_only=True)``; never unpickled code."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends; never retried unsafely
            raise ConfigError(f"checkpoint {path} was refused by torch.load(weights_only=True): "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0]}. Only tensors are read; "
                              "convert it to safetensors or a plain state dict") from None
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"checkpoint {path} does not hold a state dict of tensors")
    # DataParallel / DDP checkpoints prefix every key with "module."
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def declared_classes(name: str, label_offset: Optional[int] = None, num_classes: Optional[int] = None) -> int:
    """The class count a hub model will output, from its config alone (nothing is built)."""
    spec = parse_name(name)
    meta = model_meta(spec)
    n = int(num_classes) if num_classes is not None else meta.num_classes
    return n - (meta.label_offset if label_offset is None else int(label_offset))


HUB_PROBE_S = 3.0   # how long a connection to the hub may take before the run is told it is offline


def hub_unreachable(spec: ModelSpec) -> Optional[str]:
    """Why the hub that serves ``spec``'s weights cannot be reached (one connection attempt of at most
    HUB_PROBE_S seconds), or None when it can, or when a proxy is set (the hub's own client then decides).
    Without it, huggingface_hub retries an unreachable hub for about a minute before failing."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co") if spec.library == "timm"
                   else "https://download.pytorch.org")
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_S).close()
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or type(exc).__name__}"
    return None


def _require_cached(spec: ModelSpec, pretrained: bool) -> None:
    if not pretrained or weights_cached(spec):
        return
    if offline():
        raise MissingWeightsError(f"pretrained weights of {spec.name!r} are not in the local cache and the run is "
                                  f"offline (HF_HUB_OFFLINE=1); {FETCH_HINT}")
    why = hub_unreachable(spec)
    if why:
        raise MissingWeightsError(f"pretrained weights of {spec.name!r} are not in the local cache and the hub cannot "
                                  f"be reached ({why}); on an offline machine set HF_HUB_OFFLINE=1 and {FETCH_HINT}")


def _build(spec: ModelSpec, pretrained: bool, num_classes: Optional[int]) -> nn.Module:
    kw = {} if num_classes is None else {"num_classes": int(num_classes)}
    _require_cached(spec, pretrained)
    try:
        return spec.hub.create(spec, pretrained, kw)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - download/cache failures of the hubs
        if not pretrained:
            raise
        raise MissingWeightsError(f"could not load pretrained weights of {spec.name!r} "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                  f"{FETCH_HINT}") from None


PREPROCESS = ("own", "transferattack")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_hub_model(name: str, *, pretrained: bool = True, label_offset: Optional[int] = None,
                   num_classes: Optional[int] = None, input_size: Optional[int] = None,
                   interpolation: Optional[str] = None, preprocess: str = "own") -> Preprocess:
    """Build ``name`` and wrap it to take [0,1] images with its own preprocessing.

    ``label_offset`` (default: the pretrained config's, 0 for every timm ImageNet model)
    drops leading logits, e.g. 1 for a 1001-class TF-slim checkpoint; ``num_classes`` sets
    the head size for checkpoints; ``input_size`` / ``interpolation`` override the model's
    own, which come from timm's pretrained config or torchvision's weights meta.

    ``preprocess="transferattack"`` reproduces TransferAttack's ``utils.wrap_model`` instead:
    bilinear resize to 224 and the timm config's mean/std for timm models; for torchvision
    models ImageNet's mean/std at 224, except Inception models, which it feeds mean = std = 0.5
    at 299 (on top of torchvision's own ``transform_input``). Only its two experiments use it.
    """
    if preprocess not in PREPROCESS:
        raise ConfigError(f"preprocess={preprocess!r}; valid: {', '.join(PREPROCESS)}")
    spec = parse_name(name)
    meta = model_meta(spec)
    use_hub = pretrained and spec.checkpoint is None
    model = _build(spec, use_hub, num_classes)
    if spec.checkpoint is not None:
        state = read_checkpoint(spec.checkpoint)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise ConfigError(f"checkpoint {spec.checkpoint} does not match {spec.arch}: "
                              f"{str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}") from None
        if missing or unexpected:
            raise ConfigError(f"checkpoint {spec.checkpoint} does not match {spec.arch}: "
                              f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    offset = meta.label_offset if label_offset is None else int(label_offset)
    mean, std, size, interp = meta.mean, meta.std, meta.input_size, meta.interpolation
    if preprocess == "transferattack":
        mean, std, size = spec.hub.transferattack_stats(spec, meta)
        interp = "bilinear"
    return Preprocess(model, mean, std, input_size or size, interpolation or interp, label_offset=offset, name=name)


# ---------------------------------------------------------------- the hub sources

class HubSource(ModelSource):
    """What every hub source shares (the libraries, and ``ARCH@PATH`` checkpoints of their
    architectures): building and wrapping through :func:`load_hub_model`, the class count from the
    library's config, availability, the weights file and the listing."""

    def load(self, name, *, pretrained=True, label_offset=None, num_classes=None, input_size=None,
             preprocess="own", **_):
        return load_hub_model(name, pretrained=pretrained, label_offset=label_offset, num_classes=num_classes,
                              input_size=input_size, preprocess=preprocess)

    def classes(self, name, label_offset=None, num_classes=None):
        return declared_classes(name, label_offset, num_classes)

    def check_available(self, name, pretrained=True):
        _require_cached(parse_name(name), pretrained)

    def weights_file(self, name, zoo_dir=None):
        return cached_weights_file(parse_name(name))

    def listing(self, name):
        spec = parse_name(name)
        return {"source": spec.library, "family": spec.arch, "test_acc": None, "cached": bool(weights_cached(spec))}


class Library(HubSource):
    """A model library (timm, torchvision): what the library itself knows of a name, the parts
    :class:`HubSource`'s shared work asks of ``spec.hub``."""

    @abc.abstractmethod
    def parse(self, raw: str, name: str, checkpoint: Optional[Path]) -> ModelSpec:
        """The name as this library parses it (``raw`` as written, ``name`` without its checkpoint)."""

    @abc.abstractmethod
    def meta(self, spec: ModelSpec) -> Meta:
        """The model's preprocessing and label space, from the library's config."""

    @abc.abstractmethod
    def cached_file(self, spec: ModelSpec) -> Optional[Path]:
        """The locally cached pretrained weights, or None."""

    @abc.abstractmethod
    def create(self, spec: ModelSpec, pretrained: bool, kw: Dict) -> nn.Module:
        """The library's model (its own weights when ``pretrained``)."""

    def transferattack_stats(self, spec: ModelSpec, meta: Meta) -> Tuple[Tuple[float, ...], Tuple[float, ...], int]:
        """(mean, std, input size) that TransferAttack's ``utils.wrap_model`` feeds this model."""
        return meta.mean, meta.std, 224
