import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# The suite uses the pinned testbed weights (None), or trained ones when FLATBENCH_ZOO names a directory.
ZOO = Path(os.environ["FLATBENCH_ZOO"]) if os.environ.get("FLATBENCH_ZOO") else None

# chunk and channels_last default to a rule (no timing). A test that asks for "measure" names
# its own tuning file, so no test's choice depends on which test measured first.
os.environ.pop("FLATBENCH_TUNING_FILE", None)


def zoo_env(zoo_dir) -> dict:
    """The environment that selects ``zoo_dir``'s weights in a subprocess (none: the pinned ones)."""
    return {} if zoo_dir is None else {"FLATBENCH_ZOO": str(zoo_dir)}


@pytest.fixture(scope="session")
def zoo_dir():
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


def write_png(path: Path, seed: int, size: int = 40) -> Path:
    """A smooth random RGB image (not noise, so JPEG and median filters act as on photos)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_layouts(root: Path, n: int = 6) -> dict:
    """Tiny NIPS17, TransferAttack and ImageFolder trees of generated PNGs."""
    nips = root / "nips17"
    rows = ["ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,Pretrained"]
    for i in range(n):
        write_png(nips / "images" / f"img{i:03d}.png", i)
        rows.append(f"img{i:03d},u,0,0,1,1,{1 + 37 * i},{500 + i},1")
    (nips / "images.csv").write_text("\n".join(rows) + "\n")
    ta = root / "transferattack"
    rows = ["filename,label,targeted_label"]
    for i in range(n):
        write_png(ta / "images" / f"{i}.png", 100 + i)
        rows.append(f"{i}.png,{37 * i},{900 - i}")
    (ta / "labels.csv").write_text("\n".join(rows) + "\n")
    folder = root / "imagenet_val"
    for i in range(n):
        write_png(folder / f"n0{i % 3:07d}" / f"ILSVRC_{i}.JPEG".replace(".JPEG", ".png"), 200 + i, size=50)
    return {"nips17": nips, "transferattack": ta, "imagefolder": folder, "root": root}


@pytest.fixture(scope="session")
def layouts(tmp_path_factory):
    return make_layouts(tmp_path_factory.mktemp("imagenet_layouts"))


SLURM_SCRIPT = ROOT / "scripts" / "slurm_local.sh"


@pytest.fixture(scope="session")
def slurm_cluster():
    """The single-node cluster of scripts/slurm_local.sh: used when running (CI starts it in
    .ci/run), else started here and stopped at the end; the tests skip, with the script's reason,
    where it cannot start (not root, no apt-get), and fail under CI=true (.ci/run sets it)."""
    import subprocess

    def script(*args, timeout=900):
        return subprocess.run(["bash", str(SLURM_SCRIPT), *args], capture_output=True, text=True, timeout=timeout)

    started = False
    if script("status").returncode != 0:
        p = script("start")
        if p.returncode != 0:
            reason = (p.stderr.strip() or p.stdout.strip() or "unknown").splitlines()[-1]
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"CI=true but the local SLURM cluster did not start: {reason}")  # CI runs them, never skips
            pytest.skip(f"no local SLURM cluster: {reason}")
        started = True
    conf = script("env").stdout.strip().split("=", 1)[1]
    yield {"SLURM_CONF": conf}
    if started:
        script("stop")
