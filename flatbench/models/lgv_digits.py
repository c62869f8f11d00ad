"""The testbed's LGV sets: three collection runs of models collected from the pinned ``digits-resnet``.

``digits-resnet-lgv``, ``digits-resnet-lgv-2`` and ``digits-resnet-lgv-3`` are one recipe
(:data:`RECIPE`) from SGD seeds 0, 1 and 2: 10 collected models each, pinned in one fp16 safetensors file
with a sidecar (SHA-256, base and data checked at load, as the other testbed weights), collected by
``python scripts/lgv_collect.py``. They load as :class:`~flatbench.models.collected.CollectedModels`.

Why the learning rate is 0.015 and not LGV's 0.05: LGV's collected models live in the low-loss vicinity of
a base trained with SGD, where 0.05 is half the base's own initial rate. digits-resnet was trained with
AdamW, so LGV's value does not transfer: at 0.05 three collected models fell below 60% test accuracy
(the base: 99.6%). 0.015 is the largest rate of the grid 0.005, 0.01, 0.015, 0.02, 0.03, 0.05 at
which every collected model of all three runs keeps at least 95% of the base's accuracy
(``python scripts/lgv_collect.py --scan``; docs/testbed.md gives the grid's figures).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn as nn

from flatbench.core.registry import ConfigError

BASE = "digits-resnet"
PINNED_NAME = "digits-resnet-lgv"
# name -> the SGD seed of its collection run (the run's batches, shifts and order).
RUNS = {PINNED_NAME: 0, f"{PINNED_NAME}-2": 1, f"{PINNED_NAME}-3": 2}
# One collected model per epoch (20 steps of 64 of the 1,257 training digits), not LGV's 4: 5 steps apart the
# collected models barely differ; K = 10 = T makes every batch of a 10-step attack visit each collected model once.
# Momentum, weight decay and 10 epochs are LGV's; the learning rate is the module docstring's.
RECIPE = {"k": 10, "every": 20, "lr": 0.015, "momentum": 0.9, "weight_decay": 1e-4, "dtype": "float16"}
# Names whose pinned collected models replaced earlier ones: digits-resnet-lgv's first set (learning rate 0.05)
# left the vicinity. The revision enters every cell id and evaluation key (ModelSource.weights_revision).
REVISIONS = {PINNED_NAME: 2}
# The lowest share of the base's test accuracy every collected model must keep (the collection's criterion).
KEEP = 0.95


def lgv_run(name: str) -> int:
    """The run number of a pinned LGV set: 1, 2 or 3."""
    return list(RUNS).index(name) + 1


def pinned_key(name: str) -> Dict:
    """The fields that say how the pinned set ``name`` was made; loading checks them. The base is
    always the shipped one: :func:`build_pinned` collects from ``load_pinned(BASE)``, wherever it writes."""
    from flatbench.data.digits import load_split
    from flatbench.models.testbed import PINNED_DIR, file_sha256
    from flatbench.models.testbed.training import LGV_CODE_VERSION

    return {"name": name, "base": BASE, "base_sha256": file_sha256(PINNED_DIR / f"{BASE}.safetensors"),
            "recipe": {**RECIPE, "seed": RUNS[name]}, "revision": REVISIONS.get(name, 1),
            "data_hash": load_split("train").digest() + load_split("test").digest(),
            "lgv_code_version": LGV_CODE_VERSION}


def collect_run(seed: int, lr: float, progress: bool = True) -> Dict[str, torch.Tensor]:
    """One collection run from the pinned base, as the flat dict of fp16 tensors that is pinned."""
    from flatbench.models.testbed import load_pinned
    from flatbench.models.testbed.training import collect_lgv_weights

    r = RECIPE
    states = collect_lgv_weights(BASE, load_pinned(BASE), r["k"], r["every"], lr, r["momentum"], r["weight_decay"],
                                      seed, progress)
    dtype = getattr(torch, r["dtype"])
    return {f"s{i:02d}.{n}": (v.to(dtype) if v.is_floating_point() else v).contiguous()
            for i, s in enumerate(states) for n, v in s.items()}


def collected_accuracies(flat: Dict[str, torch.Tensor]) -> List[float]:
    """Each collected model's test accuracy (%), as stored."""
    from flatbench.data.digits import load_split
    from flatbench.models.testbed.training import accuracy

    test = load_split("test")
    return [round(accuracy(m, test.floats(), test.labels), 3) for m in unpack(flat, RECIPE["k"])]


def build_pinned(name: str, directory: Path, progress: bool = True) -> Dict:
    """Collect the set ``name`` from the pinned base and write ``NAME.safetensors`` and its sidecar into
    ``directory``; returns the sidecar."""
    from safetensors.torch import save

    from flatbench.core.io import atomic_write_bytes, atomic_write_text
    from flatbench.models.testbed import file_sha256

    flat = collect_run(RUNS[name], RECIPE["lr"], progress)
    path = Path(directory) / f"{name}.safetensors"
    atomic_write_bytes(path, save(flat))
    meta = {**pinned_key(name), "test_acc": collected_accuracies(flat), "sha256": file_sha256(path)}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return meta


def scan(rates: Sequence[float], seeds: Sequence[int] = (0, 1, 2), progress: bool = False) -> Iterator[Dict]:
    """For each learning rate and SGD seed in turn, the collected models' test accuracies against :data:`KEEP` of
    the base's."""
    from flatbench.data.digits import load_split
    from flatbench.models.testbed import load_pinned
    from flatbench.models.testbed.training import accuracy

    test = load_split("test")
    base = accuracy(load_pinned(BASE), test.floats(), test.labels)
    for lr in rates:
        for seed in seeds:
            accs = collected_accuracies(collect_run(seed, lr, progress))
            yield {"lr": lr, "seed": seed, "base_acc": round(base, 3), "min_acc": min(accs),
                   "keeps": min(accs) >= KEEP * base, "test_acc": accs}


def unpack(flat: Dict[str, torch.Tensor], k: int) -> List[nn.Module]:
    from flatbench.models.testbed import MEAN, STD, TESTBED
    from flatbench.models.wrap import Preprocess, freeze

    models = []
    for i in range(k):
        net = TESTBED[BASE].build()
        state = {n[4:]: v.float() if v.is_floating_point() else v for n, v in flat.items() if n.startswith(f"s{i:02d}.")}
        net.load_state_dict(state)
        models.append(freeze(Preprocess(net, MEAN, STD, name=f"{BASE}@lgv{i:02d}")))
    return models


def load_pinned_lgv(name: str = PINNED_NAME, directory: Optional[Path] = None, seed: int = 0):
    """The pinned set ``name``, after checking its SHA-256, its base and data."""
    from safetensors.torch import load_file

    from flatbench.models.collected import CollectedModels
    from flatbench.models.testbed import PINNED_DIR
    from flatbench.models.testbed.pinning import checked_sidecar

    directory = Path(directory or PINNED_DIR)
    path, side = directory / f"{name}.safetensors", directory / f"{name}.json"
    meta = checked_sidecar(path, side, "the pinned collected models",
                           f"the pinned collected models {path} are missing (a broken install?): reinstall flatbench, or "
                           f"rebuild them with `python scripts/lgv_collect.py {name} --out DIR`", "reinstall flatbench")
    want = pinned_key(name)
    stale = [k for k in ("base_sha256", "data_hash", "revision") if meta.get(k, 1) != want[k]]
    if stale:
        raise ConfigError(f"the pinned collected models {path} were collected from another {BASE}, data set or recipe "
                          f"({', '.join(stale)} differ): rebuild them with `python scripts/lgv_collect.py {name}`")
    return CollectedModels(unpack(load_file(str(path)), int(meta["recipe"]["k"])), seed=seed, name=name)
