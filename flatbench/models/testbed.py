"""The digits testbed zoo: six small classifiers from distinct families, with pinned weights.

The weights ship with the package (``flatbench/models/zoo/NAME.safetensors``, 6.6 MB in all)
beside a ``NAME.json`` sidecar: SHA-256 of the file, architecture, recipe, seed, data hash,
test accuracy, where it was trained. Loading checks the hash and the data hash; a mismatch is
an error, never a silent retrain, so every machine attacks the same zoo and prints the same
table. Training stays available and real: ``flatbench-zoo train`` retrains into a directory
of the user's choice, and ``paths.zoo_dir=DIR`` (or ``FLATBENCH_ZOO``) selects those
weights; a model missing there is trained on first use and cached with its sidecar, reused
only while the sidecar matches (otherwise retrained, and the log says why).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io import atomic_write_bytes, atomic_write_text, locked
from ..registry import ConfigError
from .wrap import Preprocess, freeze

log = logging.getLogger(__name__)

IMAGE_SIZE = 32
NUM_CLASSES = 10
# One mean/std for the testbed, estimated on the 32×32 training images (rounded).
MEAN, STD = (0.27,), (0.38,)


class MLP(nn.Module):
    def __init__(self, width: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(IMAGE_SIZE * IMAGE_SIZE, width), nn.ReLU(),
            nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, NUM_CLASSES),
        )

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """LeNet-style: two conv/ReLU/max-pool stages and two dense layers."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, NUM_CLASSES))

    def forward(self, x):
        return self.head(self.features(x))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class CNNBN(nn.Module):
    """VGG-style: conv/BN/ReLU pairs, average pooling, global pooling head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(1, 32), _conv_bn(32, 32), nn.AvgPool2d(2),
            _conv_bn(32, 64), _conv_bn(64, 64), nn.AvgPool2d(2),
            _conv_bn(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(128, NUM_CLASSES)

    def forward(self, x):
        return self.fc(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet(nn.Module):
    """ResNet-8-style: a 3×3 stem and three stages of one basic block (16, 32, 64 channels)."""

    def __init__(self, widths=(16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, NUM_CLASSES)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


def _vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=IMAGE_SIZE, patch_size=4, in_chans=1, num_classes=NUM_CLASSES,
                             embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)


def _mixer() -> nn.Module:
    from timm.models.mlp_mixer import MlpMixer

    return MlpMixer(num_classes=NUM_CLASSES, img_size=IMAGE_SIZE, in_chans=1, patch_size=4,
                    num_blocks=4, embed_dim=64, mlp_ratio=(0.5, 2.0))


@dataclass(frozen=True)
class Recipe:
    """How a testbed model is trained; part of the cache key."""

    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 5e-4
    shift: int = 2  # random translation, pixels, as augmentation
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class Spec:
    family: str
    build: Callable[[], nn.Module]
    recipe: Recipe


TESTBED: Dict[str, Spec] = {
    "digits-mlp": Spec("MLP", MLP, Recipe(epochs=15, lr=1e-3)),
    "digits-cnn": Spec("CNN", CNN, Recipe(epochs=12, lr=2e-3)),
    "digits-cnn-bn": Spec("CNN+BN", CNNBN, Recipe(epochs=12, lr=3e-3)),
    "digits-resnet": Spec("ResNet", ResNet, Recipe(epochs=12, lr=3e-3)),
    "digits-vit": Spec("ViT", _vit, Recipe(epochs=40, lr=2e-3)),
    "digits-mixer": Spec("MLP-Mixer", _mixer, Recipe(epochs=30, lr=2e-3)),
}

# Bump when the training code changes in a way the recipe does not capture.
TRAIN_CODE_VERSION = 1


PINNED_DIR = Path(__file__).resolve().parent / "zoo"


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
    model.model.load_state_dict(load_file(str(weights)))
    return freeze(model)


def load_pinned(name: str, directory: Path = PINNED_DIR) -> nn.Module:
    """The pinned weights of ``name``, after checking their SHA-256 and the data they were trained on."""
    from ..data.digits import load_split

    weights, side = directory / f"{name}.safetensors", directory / f"{name}.json"
    if not weights.exists() or not side.exists():
        raise ConfigError(f"the pinned weights of {name!r} are missing from {directory} (a broken install?): reinstall "
                          f"flatbench, or train them with `flatbench-zoo train {name} --out DIR` and set paths.zoo_dir=DIR")
    meta = json.loads(side.read_text())
    got = file_sha256(weights)
    if got != meta.get("sha256"):
        raise ConfigError(f"the pinned weights {weights} fail their SHA-256 check (sidecar {str(meta.get('sha256'))[:16]}..., "
                          f"file {got[:16]}...): the file is corrupt or was changed; reinstall flatbench (flatbench "
                          "never retrains pinned weights silently)")
    data = load_split("train").digest() + load_split("test").digest()
    if meta.get("data_hash") != data:
        raise ConfigError(f"the pinned weights of {name!r} were trained on digits data with hash {meta.get('data_hash')}, "
                          f"but this installation's split hashes to {data} (another scikit-learn data file?): their "
                          "accuracy and the README's tables do not apply; retrain with `flatbench-zoo train`")
    return _build_wrapped(name, weights)


def pinned_sidecar(name: str, directory: Path = PINNED_DIR) -> dict:
    return json.loads((directory / f"{name}.json").read_text())


def _crop(pad: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.stack([pad[i, :, dy[i]: dy[i] + h, dx[i]: dx[i] + w] for i in range(pad.shape[0])])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return 100.0 * correct / len(x)


def train(name: str, seed: int = 0, progress: bool = True) -> tuple:
    """Train testbed model ``name`` from scratch; returns (wrapped model, sidecar dict)."""
    from tqdm.auto import tqdm

    from ..data.digits import load_split

    spec = TESTBED[name]
    rec = spec.recipe
    train_set, test_set = load_split("train"), load_split("test")
    torch.manual_seed(seed)
    net = spec.build()
    model = Preprocess(net, MEAN, STD, name=name)
    for p in model.model.parameters():
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    x, y = train_set.floats(), train_set.labels
    steps_per_epoch = (len(x) + rec.batch_size - 1) // rec.batch_size
    opt = torch.optim.AdamW(model.model.parameters(), lr=rec.lr, weight_decay=rec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=rec.lr, total_steps=rec.epochs * steps_per_epoch)
    t0 = time.perf_counter()
    bar = tqdm(range(rec.epochs), desc=f"train {name}", disable=not progress, leave=False)
    for _ in bar:
        model.model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), rec.batch_size):
            idx = perm[i:i + rec.batch_size]
            xb = _crop(F.pad(x[idx], (rec.shift,) * 4), *_offsets(len(idx), rec.shift, gen), IMAGE_SIZE, IMAGE_SIZE) if rec.shift else x[idx]
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=rec.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - t0
    freeze(model)
    acc = accuracy(model, test_set.floats(), test_set.labels)
    meta = sidecar_key(name, seed)
    meta.update({"test_acc": round(acc, 3), "train_seconds": round(seconds, 2), "family": spec.family,
                 "n_params": sum(p.numel() for p in net.parameters())})
    return model, meta


def _offsets(n: int, k: int, gen: torch.Generator):
    return torch.randint(0, 2 * k + 1, (n,), generator=gen), torch.randint(0, 2 * k + 1, (n,), generator=gen)


def sidecar_key(name: str, seed: int) -> dict:
    """The fields that must match for a cached model to be reused."""
    from ..data.digits import load_split

    spec = TESTBED[name]
    return {
        "name": name,
        "arch": repr(spec.build()),
        "recipe": asdict(spec.recipe),
        "seed": int(seed),
        "data_hash": load_split("train").digest() + load_split("test").digest(),
        "train_code_version": TRAIN_CODE_VERSION,
    }


def cache_status(name: str, zoo_dir: Path, seed: int) -> Optional[str]:
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


def load_testbed(name: str, zoo_dir: Optional[Path] = None, seed: int = 0, progress: bool = True) -> nn.Module:
    """Testbed model ``name``: the pinned weights, or with ``zoo_dir`` the trained ones there
    (trained on first use and cached with their sidecar)."""
    if name not in TESTBED:
        raise ConfigError(f"unknown testbed model {name!r}. Valid choices: {', '.join(TESTBED)}")
    zoo_dir = Path(zoo_dir) if zoo_dir is not None else default_zoo_dir()
    if zoo_dir is None:
        if seed != 0:
            raise ConfigError(f"pinned testbed weights are seed 0's; for seed {seed} train them with "
                              f"`flatbench-zoo train --seed {seed} --out DIR` and set paths.zoo_dir=DIR")
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
    state = {k: v.contiguous() for k, v in model.model.state_dict().items()}
    atomic_write_bytes(weights, save(state))
    atomic_write_text(weights.with_suffix(".json"), json.dumps({**meta, "sha256": file_sha256(weights)}, indent=2))
    return weights


def sidecar(name: str, zoo_dir: Optional[Path] = None) -> dict:
    """The sidecar of ``name``: of the trained weights in ``zoo_dir``, else of the pinned ones."""
    zoo_dir = Path(zoo_dir) if zoo_dir is not None else default_zoo_dir()
    return json.loads(((zoo_dir or PINNED_DIR) / f"{name}.json").read_text())
