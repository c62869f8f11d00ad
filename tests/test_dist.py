"""The rules by which a cell's processes find each other: torchrun's variables, a SLURM step's,
or none; and which GPU each task takes. (The real groups are formed in tests/test_sweeps.py,
torchrun, and tests/test_slurm.py, SLURM tasks.)"""
import pytest
import torch

from flatbench.cell.plan import _device
from flatbench.cell.dist import World, first_host, node_address, slurm_world
from flatbench.core.registry import ConfigError


@pytest.mark.parametrize("nodelist, host", [
    ("vm", "vm"),
    ("gpu[03-05,9],cpu1", "gpu03"),
    ("gpu[9,03-05]", "gpu9"),
    ("a1,b[1-2]", "a1"),
    ("rack[1-2]-n[07-08]", "rack1-n07"),
    (" node007 ", "node007"),
])
def test_first_host_of_a_slurm_host_list(nodelist, host):
    assert first_host(nodelist) == host


STEP = {"SLURM_JOB_ID": "4711", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[07-08]",
        "SLURM_JOB_NODELIST": "gpu[07-08]"}


def test_a_srun_task_of_a_multi_task_step_is_a_rank():
    rank, size, local, addr, port = slurm_world(STEP)
    assert (rank, size, local, addr) == (3, 4, 1, "gpu07")
    assert 20000 <= port < 60000
    # Every task of one run agrees; a requeued run (SLURM_RESTART_COUNT) takes another port, so a socket of
    # the run before it, still closing, cannot block it (EADDRINUSE, seen on a 2-node time-limit requeue);
    # another cell of a job array (another job id) gets another port.
    assert slurm_world({**STEP, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"})[4] == port
    assert slurm_world({**STEP, "SLURM_RESTART_COUNT": "0"})[4] == port
    assert slurm_world({**STEP, "SLURM_RESTART_COUNT": "1"})[4] != port
    assert slurm_world({**STEP, "SLURM_JOB_ID": "4712"})[4] != port
    # A user's MASTER_ADDR / MASTER_PORT win.
    assert slurm_world({**STEP, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})[3:] == ("10.0.0.1", 29500)


def test_a_node_name_that_does_not_resolve_is_reached_through_its_node_addr(tmp_path, monkeypatch):
    """The master is the step's first node. A name that resolves is used as it is; one that does not
    (n1 of scripts/slurm_local.sh's two-node layout, two slurmd daemons of one host) is looked up as
    its NodeAddr in ``scontrol show node``; without scontrol the name stays. A fake scontrol on PATH
    answers as SLURM does. Broken variant: the name taken as it is (n1; the tasks then never connect)."""
    fake = tmp_path / "scontrol"
    fake.write_text('#!/bin/sh\n[ "$3" = n1 ] && echo "NodeName=n1 Arch=x86_64 NodeAddr=127.0.0.1 NodeHostName=vm Port=6842"\n')
    fake.chmod(0o755)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert node_address("localhost") == "localhost"
    assert node_address("n1") == "127.0.0.1"
    assert node_address("n9-nowhere") == "n9-nowhere"   # scontrol knows no such node
    monkeypatch.setenv("PATH", "/nonexistent")
    assert node_address("n1") == "n1"
    monkeypatch.setenv("MASTER_ADDR", "n1")   # a user's address is taken as given
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert node_address("n1") == "n1"


def test_a_batch_script_or_a_one_task_step_is_one_process():
    # The batch script of a 4-task allocation runs once: SLURM_NTASKS=4 but it is not a step's task.
    batch = {k: v for k, v in STEP.items() if not k.startswith("SLURM_STEP")}
    assert slurm_world(batch) is None
    assert slurm_world({**STEP, "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert slurm_world({}) is None
    with pytest.raises(RuntimeError, match="SLURM_PROCID"):
        slurm_world({k: v for k, v in STEP.items() if k != "SLURM_PROCID"})


def test_each_task_takes_its_local_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert _device("auto", World(rank=5, size=8, local_rank=1)) == torch.device("cuda", 1)
    assert _device("cuda", World(rank=2, size=4, local_rank=2)) == torch.device("cuda", 2)
    assert _device("cuda:3", World(rank=1, size=2, local_rank=1)) == torch.device("cuda", 3)   # named: kept
    assert _device("auto", World()) == torch.device("cuda")
    # SLURM bound one GPU to each task: each sees it as cuda:0.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _device("auto", World(rank=1, size=2, local_rank=1)) == torch.device("cuda", 0)
    # Two GPUs for three tasks on a node: one line naming the setting, not two tasks on one GPU.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="gpus_per_node"):
        _device("auto", World(rank=2, size=3, local_rank=2))
