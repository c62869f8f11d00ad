"""The hub model sources: torchvision, timm, and ``ARCH@PATH`` checkpoints of either (see
:mod:`flatbench.models.sources`).

Each says what its library knows of a name: how it is parsed, its preprocessing and label space,
where its pretrained weights are cached, how it is built, and what TransferAttack's ``wrap_model``
feeds it. Building, wrapping and checkpoints are :mod:`flatbench.models.hub`'s, shared by both.
"""
from __future__ import annotations

from pathlib import Path

from flatbench.core.registry import ConfigError, suggest
from flatbench.models.hub import IMAGENET_MEAN, IMAGENET_STD, HubSource, Library, Meta, ModelSpec, _hf_file, _torch_hub_file, parse_name


class TorchvisionSource(Library):
    """``torchvision:NAME.WEIGHTS``: a torchvision builder and its weights enum member."""

    name = "torchvision"

    def claims(self, name: str) -> bool:
        return name.startswith("torchvision:")

    def parse(self, raw, name, checkpoint):
        import torchvision.models as tvm

        body = name[len("torchvision:"):]
        arch, _, tag = body.partition(".")
        builders = tvm.list_models()
        if arch not in builders:
            raise ConfigError(f"unknown torchvision model {arch!r} in {raw!r}.{suggest(arch, builders)} "
                              f"Valid: torchvision.models.list_models()")
        return ModelSpec(raw, "torchvision", arch, tag or None, checkpoint)

    def weights(self, spec: ModelSpec):
        import torchvision.models as tvm

        enum = tvm.get_model_weights(spec.arch)
        members = [m.name for m in enum] + ["DEFAULT"]
        tag = spec.tag or "DEFAULT"
        if tag not in members:
            raise ConfigError(f"torchvision {spec.arch!r} has no weights {tag!r}. Valid: {', '.join(members)}."
                              f"{suggest(tag, members)}")
        return enum[tag] if tag != "DEFAULT" else enum.DEFAULT

    def meta(self, spec):
        w = self.weights(spec)
        t = w.transforms()
        size = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
        interp = str(getattr(t.interpolation, "value", t.interpolation)).lower()
        return Meta(int(size), interp, tuple(t.mean), tuple(t.std), len(w.meta["categories"]), 0)

    def cached_file(self, spec):
        return _torch_hub_file(self.weights(spec).url)

    def create(self, spec, pretrained, kw):
        import torchvision.models as tvm

        return tvm.get_model(spec.arch, weights=self.weights(spec) if pretrained else None, **kw)

    def transferattack_stats(self, spec, meta):
        # ImageNet's statistics at 224, except Inception models, which it feeds mean = std = 0.5 at 299.
        if spec.arch.startswith("inception"):
            return (0.5,) * 3, (0.5,) * 3, 299
        return IMAGENET_MEAN, IMAGENET_STD, 224


class TimmSource(Library):
    """A timm name with its pretrained tag, ``resnet50.tv_in1k`` (``timm:`` may prefix it). It claims
    every name no earlier source did, so an unknown name fails here, listing the valid forms."""

    name = "timm"

    def claims(self, name: str) -> bool:
        return True

    def parse(self, raw, name, checkpoint):
        import timm

        if name.startswith("timm:"):
            name = name[len("timm:"):]
        arch, _, tag = name.partition(".")
        names = set(timm.list_models())
        if arch not in names:
            from flatbench.models.testbed import TESTBED

            hint = suggest(raw, TESTBED) or suggest(arch, names)
            raise ConfigError(f"unknown model {raw!r}: not a testbed model ({', '.join(TESTBED)}), a timm architecture, "
                              f"or 'torchvision:NAME.WEIGHTS'.{hint}")
        return ModelSpec(raw, "timm", arch, tag or None, checkpoint)

    def _cfg(self, spec: ModelSpec):
        import timm

        cfg = timm.models.get_pretrained_cfg(spec.timm_name) if spec.tag else None
        if cfg is None:
            tags = timm.list_pretrained(f"{spec.arch}.*")
            cfg = timm.models.get_pretrained_cfg(tags[0]) if tags else None
        return cfg

    def meta(self, spec):
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

    def cached_file(self, spec):
        cfg = self._cfg(spec)
        if cfg is None:
            return None
        if cfg.hf_hub_id:
            hit = _hf_file(cfg.hf_hub_id)
            return Path(hit) if hit else None
        return _torch_hub_file(cfg.url or "")

    def create(self, spec, pretrained, kw):
        import timm

        return timm.create_model(spec.timm_name, pretrained=pretrained, **kw)


class CheckpointSource(HubSource):
    """``ARCH@PATH``: the architecture ARCH (a timm or torchvision name) with weights from PATH. It builds,
    wraps and counts classes as the hubs do (ARCH's library parses it); only where the weights come from differs."""

    name = "checkpoint"

    def claims(self, name: str) -> bool:
        return "@" in name

    def check_available(self, name, pretrained=True):
        spec = parse_name(name)
        if not spec.checkpoint.is_file():
            raise ConfigError(f"checkpoint {spec.checkpoint} of {name!r} does not exist")

    def weights_file(self, name, zoo_dir=None):
        spec = parse_name(name)
        return spec.checkpoint if spec.checkpoint.is_file() else None

    def listing(self, name):
        spec = parse_name(name)
        return {"source": "checkpoint", "family": spec.arch, "test_acc": None, "cached": spec.checkpoint.is_file()}
