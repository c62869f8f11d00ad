"""The testbed's weights: the pinned ones shipped with the package (SHA-256 and data hash checked), or
trained ones in a directory of the user's, trained on first use and reused while their sidecar matches."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from flatbench.core.io import atomic_write_bytes, atomic_write_text, locked
from flatbench.core.registry import ConfigError
from flatbench.models.wrap import Preprocess, freeze
from flatbench.models.testbed.architectures import MEAN, STD, TESTBED
from flatbench.models.testbed.training import sidecar_key, train

log = logging.getLogger("flatbench.models.testbed")

PINNED_DIR = Path(__file__).resolve().parent.parent / "zoo"   # flatbench/models/zoo


def default_zoo_dir() -> Optional[Path]:
    """Trained weights selected by FLATBENCH_ZOO, else None: the pinned weights."""
    env = os.environ.get("FLATBENCH_ZOO")
    return Path(env) if env else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _build_wrapped(name: str, weights: Path, seed: int = 0) -> nn.Module:
    from safetensors.torch import load_file

    torch.manual_seed(seed)
    model = Preprocess(TESTBED[name].build(), MEAN, STD, name=name)
    # An instance stored in float16 computes in float32, as it was evaluated when it was trained.
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    model.model.load_state_dict(state)
    return freeze(model)


def checked_sidecar(path: Path, side: Path, what: str, missing: str, then: str) -> dict:
    """The sidecar of a file shipped with the package, once both exist (else ConfigError ``missing``)
    and the file's SHA-256 is the sidecar's (else a ConfigError naming ``what`` and saying ``then``)."""
    if not path.is_file() or not side.is_file():
        raise ConfigError(missing)
    meta = json.loads(side.read_text())
    got = file_sha256(path)
    if got != meta.get("sha256"):
        raise ConfigError(f"{what} {path} fail their SHA-256 check (sidecar {str(meta.get('sha256'))[:16]}..., "
                          f"file {got[:16]}...): the file is corrupt or was changed; {then}")
    return meta


def load_pinned(name: str, directory: Path = PINNED_DIR) -> nn.Module:
    """The pinned weights of ``name``, after checking their SHA-256 and the data they were trained on."""
    from flatbench.data.digits import load_split

    weights, side = directory / f"{name}.safetensors", directory / f"{name}.json"
    meta = checked_sidecar(weights, side, "the pinned weights",
                           f"the pinned weights of {name!r} are missing from {directory} (a broken install?): reinstall "
                           f"flatbench, or train them with `flatbench-zoo train {name} --out DIR` and set paths.zoo_dir=DIR",
                           "reinstall flatbench (flatbench never retrains pinned weights silently)")
    data = load_split("train").digest() + load_split("test").digest()
    if meta.get("data_hash") != data:
        raise ConfigError(f"the pinned weights of {name!r} were trained on digits data with hash {meta.get('data_hash')}, "
                          f"but this installation's split hashes to {data} (another scikit-learn data file?): their "
                          "accuracy and the README's tables do not apply; retrain with `flatbench-zoo train`")
    return _build_wrapped(name, weights)


def pinned_sidecar(name: str, directory: Path = PINNED_DIR) -> dict:
    return json.loads((directory / f"{name}.json").read_text())


def cache_status(name: str, zoo_dir: Path, seed: Optional[int] = None) -> Optional[str]:
    """None if the cached model can be reused, else the reason it cannot."""
    weights, side = zoo_dir / f"{name}.safetensors", zoo_dir / f"{name}.json"
    if not weights.exists() or not side.exists():
        return "not cached"
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable sidecar ({exc})"
    want = sidecar_key(name, seed)
    diff = [k for k in want if meta.get(k) != want[k]]
    return f"sidecar differs in {', '.join(diff)}" if diff else None


def load_testbed(name: str, zoo_dir: Optional[Path] = None, seed: Optional[int] = None,
                 progress: bool = True) -> nn.Module:
    """Testbed model ``name``: the pinned weights, or with ``zoo_dir`` the trained ones there
    (trained on first use and cached with their sidecar). ``seed``: another training seed than the
    model's own (which the pinned weights are), for weights trained under ``zoo_dir``."""
    if name not in TESTBED:
        raise ConfigError(f"unknown testbed model {name!r}. Valid choices: {', '.join(TESTBED)}")
    own = TESTBED[name].seed
    seed = own if seed is None else int(seed)
    zoo_dir = Path(zoo_dir) if zoo_dir is not None else default_zoo_dir()
    if zoo_dir is None:
        if seed != own:
            raise ConfigError(f"the pinned weights of {name} are training seed {own}'s; for seed {seed} train them "
                              f"with `flatbench-zoo train {name} --seed {seed} --out DIR` and set paths.zoo_dir=DIR")
        return load_pinned(name)
    weights = zoo_dir / f"{name}.safetensors"
    with locked(zoo_dir / f".{name}.lock"):
        reason = cache_status(name, zoo_dir, seed)
        if reason is None:
            return _build_wrapped(name, weights, seed)
        log.info("training %s (%s) into %s", name, reason, zoo_dir)
        model, meta = train(name, seed, progress)
        save_trained(model, meta, zoo_dir)
        log.info("trained %s: test accuracy %.2f%% in %.1fs -> %s", name, meta["test_acc"], meta["train_seconds"], weights)
        return model


def save_trained(model: nn.Module, meta: dict, directory: Path) -> Path:
    """Write a trained model and its sidecar (with the file's SHA-256) into ``directory``."""
    from safetensors.torch import save

    weights = Path(directory) / f"{meta['name']}.safetensors"
    half = meta.get("dtype") == "float16"
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in model.model.state_dict().items()}
    atomic_write_bytes(weights, save(state))
    atomic_write_text(weights.with_suffix(".json"), json.dumps({**meta, "sha256": file_sha256(weights)}, indent=2))
    return weights


def sidecar(name: str, zoo_dir: Optional[Path] = None) -> dict:
    """The sidecar of ``name``: of the trained weights in ``zoo_dir``, else of the pinned ones."""
    zoo_dir = Path(zoo_dir) if zoo_dir is not None else default_zoo_dir()
    return json.loads(((zoo_dir or PINNED_DIR) / f"{name}.json").read_text())
