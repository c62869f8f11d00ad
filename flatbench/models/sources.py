"""Model sources: every way a model name can be resolved, one registry entry each.

A :class:`ModelSource` claims the names it knows and answers, for each of them, what the rest of
flatbench asks of a model: build it (:meth:`~ModelSource.load`), the class count it declares
without building it, whether its weights can be had before crafting starts, the file its weights
are read from (provenance's SHA-256) and its row in ``flatbench list models``.
:data:`SOURCES` holds them in resolution order, the first that claims a name owns it:

* ``testbed`` - the embedded digits zoo (``digits-cnn``), pinned weights;
* ``checkpoint`` - ``ARCH@PATH``: a hub architecture with weights read from a local file;
* ``torchvision`` - ``torchvision:NAME.WEIGHTS``;
* ``timm`` - any other name, ``resnet50.tv_in1k`` (``timm:`` may prefix it); it is last because it
  claims every name, and an unknown one fails there with the valid forms.

A new source is a subclass and one ``SOURCES.add`` line in ``flatbench/models/__init__.py``. The
``checkpoint``, ``torchvision`` and ``timm`` sources are in :mod:`flatbench.models.libraries`.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch.nn as nn

from flatbench.core.registry import ConfigError, Registry


class ModelSource(abc.ABC):
    """One way of naming and building models (see the module docstring)."""

    name = ""

    @abc.abstractmethod
    def claims(self, name: str) -> bool:
        """Whether ``name`` is this source's."""

    @abc.abstractmethod
    def load(self, name: str, *, zoo_dir: Optional[Path] = None, seed: Optional[int] = None, progress: bool = True,
             pretrained: bool = True, label_offset: Optional[int] = None, num_classes: Optional[int] = None,
             input_size: Optional[int] = None, preprocess: str = "own") -> nn.Module:
        """The model, taking [0,1] images at its own resolution, frozen in eval mode. ``seed``: None is
        the source's own default (a testbed model's training seed, an LGV set's shuffle 0)."""

    @abc.abstractmethod
    def classes(self, name: str, label_offset: Optional[int] = None, num_classes: Optional[int] = None) -> int:
        """The class count the model will output, from its declaration alone (nothing is built);
        ConfigError when the declaration does not say."""

    def check_available(self, name: str, pretrained: bool = True) -> None:
        """Fail now, not after crafting, when the model's weights cannot be had."""

    def weights_file(self, name: str, zoo_dir: Optional[Path] = None) -> Optional[Path]:
        """The file the weights are read from when it is on disk, else None."""
        return None

    @abc.abstractmethod
    def listing(self, name: str) -> Dict[str, Any]:
        """The ``flatbench list models`` columns this source knows: source, family, test_acc, cached."""

    def known(self) -> List[str]:
        """The names this source lists by itself (a hub lists only the names configs use)."""
        return []

    def derived_from(self, name: str) -> List[str]:
        """The models whose weights this one's were derived from (an LGV set's base); a target among
        them is white-box for a cell crafted on ``name``."""
        return []

    def weights_revision(self, name: str) -> int:
        """Which publication of the weights ``name`` loads: 1, the first. Pinned weights replaced under
        the same name carry a higher number, which enters the id of every cell crafted on the name and
        the key of every evaluation of it, so nothing stored from the old weights is ever reused."""
        return 1


class Sources(Registry):
    """The model sources, in the order they are asked whether they claim a name."""

    def add(self, name: str, item: ModelSource, doc: str = "", before: Optional[str] = None) -> ModelSource:
        """Put ``item`` last in the resolution order, or just before the source ``before``."""
        super().add(name, item, doc)
        if before is not None:
            order = [k for k in self._items if k != name]
            order.insert(order.index(self.get(before).name), name)
            self._items = {k: self._items[k] for k in order}
        return item

    def known(self) -> List[str]:
        """Every name a source lists by itself, in resolution order."""
        return [n for source in self._items.values() for n in source.known()]

    def owner(self, name: str) -> ModelSource:
        for key in self._items:   # insertion order: the resolution order
            if self._items[key].claims(name):
                return self._items[key]
        raise ConfigError(f"no model source claims {name!r}; sources: {', '.join(self._items)}")


SOURCES = Sources("model source")


def source_of(name: str) -> ModelSource:
    """The source that owns the model name ``name``."""
    return SOURCES.owner(name)


def weights_revision(name: str) -> int:
    """:meth:`ModelSource.weights_revision` of ``name``'s source."""
    return source_of(name).weights_revision(name)


class TestbedSource(ModelSource):
    """The embedded digits zoo: pinned weights, or trained ones under ``paths.zoo_dir``."""

    name = "testbed"

    def claims(self, name: str) -> bool:
        from flatbench.models.testbed import TESTBED

        return name in TESTBED

    def known(self):
        from flatbench.models.testbed import TESTBED

        return list(TESTBED)

    def load(self, name, *, zoo_dir=None, seed=None, progress=True, **_):
        from flatbench.models.testbed import load_testbed

        return load_testbed(name, zoo_dir=zoo_dir, seed=seed, progress=progress)

    def classes(self, name, label_offset=None, num_classes=None):
        from flatbench.models.testbed import NUM_CLASSES

        return NUM_CLASSES

    def weights_file(self, name, zoo_dir=None):
        from flatbench.models.testbed import PINNED_DIR, default_zoo_dir

        zoo = Path(zoo_dir) if zoo_dir is not None else default_zoo_dir()
        path = (zoo or PINNED_DIR) / f"{name}.safetensors"
        return path if path.is_file() else None

    def weights_revision(self, name):
        from flatbench.models.testbed import pinned_sidecar

        return int(pinned_sidecar(name).get("revision", 1))

    def listing(self, name):
        from flatbench.models.testbed import pinned_sidecar

        meta = pinned_sidecar(name)
        return {"source": "testbed", "family": meta["family"], "test_acc": meta["test_acc"], "cached": True}
