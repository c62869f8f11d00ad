import os
from pathlib import Path

import pytest
import torch

from helpers import ROOT
from images import make_layouts

# The suite uses the pinned testbed weights (None), or trained ones when FLATBENCH_ZOO names a directory.
ZOO = Path(os.environ["FLATBENCH_ZOO"]) if os.environ.get("FLATBENCH_ZOO") else None

# chunk and channels_last default to a rule (no timing). A test that asks for "measure" names
# its own tuning file, so no test's choice depends on which test measured first.
os.environ.pop("FLATBENCH_TUNING_FILE", None)


# A test that took 25 s or more in a clean-clone `.ci/run` (`PYTEST_ADDOPTS=--durations=80`) carries
# `@pytest.mark.long` on itself: `make test` leaves them out so that it stays within about 15 minutes on
# a 2-core machine; `make test-long` runs them, and CI (.ci/run) runs both. Kept in `make test` although
# as slow: the README table test, the kernel pin and one sweep-then-report, the checks a change most
# often breaks.


@pytest.fixture(scope="session")
def zoo_dir():
    return ZOO


@pytest.fixture(scope="session")
def trained_zoo(zoo_dir):
    from flatbench.models import load_model
    from flatbench.models.testbed import ARCHITECTURES

    return {name: load_model(name, zoo_dir=zoo_dir, progress=False) for name in ARCHITECTURES}


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






@pytest.fixture(scope="session")
def layouts(tmp_path_factory):
    return make_layouts(tmp_path_factory.mktemp("imagenet_layouts"))


SLURM_SCRIPT = ROOT / "scripts" / "slurm_local.sh"


def _local_cluster(env: dict, what: str):
    """A cluster of scripts/slurm_local.sh (its settings in ``env``): used when running, else started
    and stopped at the end; skipped, with the script's reason, where it cannot start (not root, no
    apt-get), and failed under CI=true (.ci/run sets it)."""
    import subprocess

    def script(*args, timeout=900):
        return subprocess.run(["bash", str(SLURM_SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **env})

    started = False
    if script("status").returncode != 0:
        p = script("start")
        if p.returncode != 0:
            reason = (p.stderr.strip() or p.stdout.strip() or "unknown").splitlines()[-1]
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"CI=true but {what} did not start: {reason}")  # CI runs them, never skips
            pytest.skip(f"no {what}: {reason}")
        started = True
    conf = script("env").stdout.strip().split("=", 1)[1]
    yield {"SLURM_CONF": conf}
    if started:
        script("stop")


@pytest.fixture(scope="session")
def slurm_cluster():
    """The single-node cluster of scripts/slurm_local.sh (CI starts it in .ci/run)."""
    yield from _local_cluster({}, "the local SLURM cluster")


@pytest.fixture(scope="session")
def slurm_two_nodes():
    """A second cluster beside the first: two nodes, n1 and n2, as two slurmd daemons of this host
    (FLATBENCH_SLURM_NODES=2), with its own directory and ports; started here, stopped at the end."""
    yield from _local_cluster({"FLATBENCH_SLURM_DIR": "/tmp/flatbench-slurm-2nodes", "FLATBENCH_SLURM_PORT": "6840",
                               "FLATBENCH_SLURM_NODES": "2"}, "the two-node local SLURM cluster")
