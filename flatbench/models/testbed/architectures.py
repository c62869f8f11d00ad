"""The six testbed architectures, one per family, with the recipe each is trained by, and their
independently trained instances: ``NAME`` is instance 1 (training seed 0), ``NAME-2`` and ``NAME-3``
are the same architecture and recipe trained from seeds 1 and 2."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Tuple

import torch.nn as nn
import torch.nn.functional as F

from flatbench.models.testbed.adversarial import Adversarial

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
class Sharpness:
    """Training with SAM (Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
    Generalization", ICLR 2021) around the recipe's own optimizer: each batch's gradient is taken at
    the weights moved by ``rho``·g/‖g‖₂ (the ascent step of radius ρ), then the recipe's optimizer
    steps from the unmoved weights with it. Part of the cache key."""

    rho: float                 # the radius of the weight-space neighbourhood
    base: str = "AdamW"        # the optimizer that takes the step: the recipe's own


@dataclass(frozen=True)
class Spec:
    family: str
    build: Callable[[], nn.Module]
    recipe: Recipe
    seed: int = 0               # the training seed of the pinned weights
    architecture: str = ""      # the instance-1 name of this architecture (its own name for instance 1)
    instance: int = 1
    dtype: str = "float32"      # how the pinned weights are stored (instances 2 and 3: float16, half the size)
    adversarial: Optional[Adversarial] = None   # adversarial training (flatbench.models.testbed.adversarial)
    sam: Optional[Sharpness] = None             # sharpness-aware training (a surrogate trained flat)


# Instance 1 of each architecture: the weights every default table is computed with.
ARCHITECTURES: Dict[str, Spec] = {
    "digits-mlp": Spec("MLP", MLP, Recipe(epochs=15, lr=1e-3)),
    "digits-cnn": Spec("CNN", CNN, Recipe(epochs=12, lr=2e-3)),
    "digits-cnn-bn": Spec("CNN+BN", CNNBN, Recipe(epochs=12, lr=3e-3)),
    "digits-resnet": Spec("ResNet", ResNet, Recipe(epochs=12, lr=3e-3)),
    "digits-vit": Spec("ViT", _vit, Recipe(epochs=40, lr=2e-3)),
    "digits-mixer": Spec("MLP-Mixer", _mixer, Recipe(epochs=30, lr=2e-3)),
}
INSTANCES = (1, 2, 3)


def instance_name(architecture: str, k: int) -> str:
    """The name of instance ``k`` of a testbed architecture: ``digits-cnn``, ``digits-cnn-2``, ..."""
    return architecture if k == 1 else f"{architecture}-{k}"


TESTBED: Dict[str, Spec] = {
    instance_name(a, k): replace(spec, seed=k - 1, architecture=a, instance=k, dtype="float32" if k == 1 else "float16")
    for k in INSTANCES for a, spec in ARCHITECTURES.items()
}

# Adversarially trained targets (role: adversarial), the CNN architecture at the testbed's eps = 32/255.
# digits-cnn-at: PGD-7 adversarial training, step eps/4 (Madry et al.'s recipe; eps/4 with 7 steps
# reaches the ball's edge from any start). digits-cnn-ens-at: ensemble adversarial training on FGSM
# examples of three static models of other architectures, instance 2 so that no default surrogate
# (instance 1) is among them (Tramer et al.'s ens3 had two static models and ens4 three).
DEFENDED: Dict[str, Spec] = {
    "digits-cnn-at": Spec("CNN (PGD-AT)", CNN, Recipe(epochs=20, lr=2e-3), architecture="digits-cnn-at",
                          adversarial=Adversarial("pgd", eps=32.0, steps=7, step_size=8.0)),
    "digits-cnn-ens-at": Spec("CNN (ens-AT)", CNN, Recipe(epochs=20, lr=2e-3), architecture="digits-cnn-ens-at",
                              adversarial=Adversarial("ensemble", eps=32.0, sources=(
                                  "digits-mlp-2", "digits-cnn-bn-2", "digits-resnet-2"))),
}
TESTBED.update(DEFENDED)

# Surrogates trained flat: instance 1's architecture, recipe and seed (so the same initial weights and
# batches), trained with SAM at a large radius. Gubri et al. ("Going Further: Flatness at the Rescue of
# Early Stopping for Adversarial Example Transferability", arXiv 2304.02688) and Zhang et al. ("Why Does
# Little Robustness Help?", S&P 2024, arXiv 2307.07873) find that a radius well above SAM's usual 0.05
# makes a better surrogate, at some cost in accuracy. SAM_RHO is the radius docs/testbed.md gives the
# reasons for (scripts/sam_radius.py scans it).
SAM_RHO = 0.3
FLAT: Dict[str, Spec] = {
    f"{a}-sam": replace(ARCHITECTURES[a], family=f"{ARCHITECTURES[a].family} (SAM)", architecture=f"{a}-sam",
                        sam=Sharpness(SAM_RHO))
    for a in ("digits-cnn", "digits-resnet")
}
TESTBED.update(FLAT)


def instance_of(name: str) -> Tuple[str, int]:
    """(architecture, instance) of a testbed model name; a name that is not one is its own architecture,
    instance 1."""
    spec = TESTBED.get(name)
    return (spec.architecture, spec.instance) if spec is not None else (name, 1)


def has_instances(name: str) -> bool:
    """Whether ``name`` is one of the instances of an architecture trained three times (a defended
    target, an LGV set or a hub model is one model, shared by every instance's replicate)."""
    return instance_of(name)[0] in ARCHITECTURES
