"""ImageNet models by name: timm, torchvision and local checkpoints.

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
:class:`MissingWeightsError`, naming the model and ``scripts/fetch_weights.py``; online,
a failed download raises the same error. Network timeouts are huggingface_hub's (10 s).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..registry import ConfigError, suggest
from .wrap import Preprocess

log = logging.getLogger(__name__)

FETCH_HINT = "fetch it ahead with `python scripts/fetch_weights.py` (same overrides as the run) on a machine with internet"


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


def offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "FLATBENCH_OFFLINE"))


def _timm_names() -> set:
    import timm

    return set(timm.list_models())


def parse_name(name: str) -> ModelSpec:
    """Parse a model name; unknown architectures fail with the closest valid names."""
    raw = name
    checkpoint = None
    if "@" in name:
        name, path = name.split("@", 1)
        checkpoint = Path(path).expanduser()
    if name.startswith("torchvision:"):
        import torchvision.models as tvm

        body = name[len("torchvision:"):]
        arch, _, tag = body.partition(".")
        builders = tvm.list_models()
        if arch not in builders:
            raise ConfigError(f"unknown torchvision model {arch!r} in {raw!r}.{suggest(arch, builders)} "
                              f"Valid: torchvision.models.list_models()")
        return ModelSpec(raw, "torchvision", arch, tag or None, checkpoint)
    if name.startswith("timm:"):
        name = name[len("timm:"):]
    arch, _, tag = name.partition(".")
    names = _timm_names()
    if arch not in names:
        from .testbed import TESTBED

        hint = suggest(raw, TESTBED) or suggest(arch, names)
        raise ConfigError(f"unknown model {raw!r}: not a testbed model ({', '.join(TESTBED)}), a timm architecture, "
                          f"or 'torchvision:NAME.WEIGHTS'.{hint}")
    return ModelSpec(raw, "timm", arch, tag or None, checkpoint)


# ---------------------------------------------------------------- preprocessing metadata

@dataclass
class Meta:
    input_size: int
    interpolation: str
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    num_classes: int
    label_offset: int


def _timm_meta(spec: ModelSpec) -> Meta:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(spec.timm_name) if spec.tag else None
    except Exception:  # noqa: BLE001 - an unknown tag is reported below with the valid ones
        cfg = None
    if cfg is None:
        tags = timm.list_pretrained(f"{spec.arch}.*")
        if spec.tag or not tags:
            raise ConfigError(f"timm has no pretrained tag {spec.timm_name!r}. Valid: {', '.join(tags) or 'none'}."
                              f"{suggest(spec.timm_name, tags)}")
        cfg = timm.models.get_pretrained_cfg(tags[0])
    return Meta(int(cfg.input_size[-1]), cfg.interpolation or "bilinear", tuple(cfg.mean), tuple(cfg.std),
                int(cfg.num_classes or 1000), int(cfg.label_offset or 0))


def _tv_weights(spec: ModelSpec):
    import torchvision.models as tvm

    enum = tvm.get_model_weights(spec.arch)
    members = [m.name for m in enum] + ["DEFAULT"]
    tag = spec.tag or "DEFAULT"
    if tag not in members:
        raise ConfigError(f"torchvision {spec.arch!r} has no weights {tag!r}. Valid: {', '.join(members)}.{suggest(tag, members)}")
    return enum[tag] if tag != "DEFAULT" else enum.DEFAULT


def _tv_meta(spec: ModelSpec) -> Meta:
    w = _tv_weights(spec)
    t = w.transforms()
    size = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
    interp = str(getattr(t.interpolation, "value", t.interpolation)).lower()
    return Meta(int(size), interp, tuple(t.mean), tuple(t.std), len(w.meta["categories"]), 0)


def model_meta(spec: ModelSpec) -> Meta:
    return _timm_meta(spec) if spec.library == "timm" else _tv_meta(spec)


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
    if spec.library == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(spec.timm_name) if spec.tag else None
        if cfg is None:
            tags = timm.list_pretrained(f"{spec.arch}.*")
            cfg = timm.models.get_pretrained_cfg(tags[0]) if tags else None
        if cfg is None:
            return None
        if cfg.hf_hub_id:
            hit = _hf_file(cfg.hf_hub_id)
            return Path(hit) if hit else None
        url = cfg.url or ""
    else:
        url = _tv_weights(spec).url
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


def check_available(name: str, pretrained: bool = True) -> None:
    """Fail now, not after crafting, when a model's weights cannot be had (offline, not cached)."""
    spec = parse_name(name)
    if spec.checkpoint is not None:
        if not spec.checkpoint.is_file():
            raise ConfigError(f"checkpoint {spec.checkpoint} of {name!r} does not exist")
    else:
        _require_cached(spec, pretrained)


def _require_cached(spec: ModelSpec, pretrained: bool) -> None:
    if pretrained and offline() and not weights_cached(spec):
        raise MissingWeightsError(f"pretrained weights of {spec.name!r} are not in the local cache and the run is "
                                  f"offline (HF_HUB_OFFLINE=1); {FETCH_HINT}")


def _build(spec: ModelSpec, pretrained: bool, num_classes: Optional[int]) -> nn.Module:
    kw = {} if num_classes is None else {"num_classes": int(num_classes)}
    _require_cached(spec, pretrained)
    try:
        if spec.library == "timm":
            import timm

            return timm.create_model(spec.timm_name, pretrained=pretrained, **kw)
        import torchvision.models as tvm

        return tvm.get_model(spec.arch, weights=_tv_weights(spec) if pretrained else None, **kw)
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
        size, interp = 224, "bilinear"
        if spec.library == "torchvision":
            inception = spec.arch.startswith("inception")
            mean, std = ((0.5,) * 3, (0.5,) * 3) if inception else (IMAGENET_MEAN, IMAGENET_STD)
            size = 299 if inception else 224
    return Preprocess(model, mean, std, input_size or size, interpolation or interp, label_offset=offset, name=name)
