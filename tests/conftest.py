import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# The suite shares the repository's zoo cache: the six testbed models train once (about
# 100 s on 2 cores) and every later run reuses them through their sidecars.
ZOO = Path(os.environ.get("FLATBENCH_ZOO", ROOT / "outputs" / "zoo"))


@pytest.fixture(scope="session")
def zoo_dir() -> Path:
    return ZOO


@pytest.fixture(scope="session")
def trained_zoo(zoo_dir):
    from flatbench.models import TESTBED, load_model

    return {name: load_model(name, zoo_dir=zoo_dir, progress=False) for name in TESTBED}


@pytest.fixture
def small_cnn():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(8 * 16, 5),
    ).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
