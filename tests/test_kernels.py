"""The command line's CPU kernel paths (flatbench/core/kernels.py) and each cell's provenance
(flatbench/cell/provenance.py): what was pinned is in effect before torch's first operation, a user's
own variable wins, and cell.json / the rows say where a cell was computed without it entering the
cell's id."""
import json
import subprocess

import pandas as pd
import pytest
import torch


from flatbench import __version__
from flatbench.core import kernels
from flatbench.models.testbed import pinned_sidecar
from helpers import ROOT, SMALL, command, report_main, run

CELL = ["flatbench", "method=ifgsm", *SMALL]


def _cell(tmp_path, name, env, zoo_dir):
    out = tmp_path / name
    run([*CELL, f"hydra.run.dir={out}", f"paths.cache_dir={tmp_path / name}-cache"], zoo_dir, tmp_path, env)
    return json.loads((out / "cell.json").read_text()), pd.read_csv(out / "results.csv")


def test_pinned_paths_are_in_effect_and_recorded_outside_the_cell_id(zoo_dir, tmp_path, monkeypatch, capsys):
    # FLATBENCH_KERNELS=default asks for the paths every x86-64 CPU has. Pinned after torch's first
    # operation (or not at all), PyTorch would report its native capability, not DEFAULT.
    if __import__("platform").machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("kernel pinning applies to x86-64 only")
    portable, rows_p = _cell(tmp_path, "portable", {"FLATBENCH_KERNELS": "default"}, zoo_dir)
    k = portable["provenance"]["kernels"]
    assert k["mode"] == "default" and k["aten_capability"] == "DEFAULT"
    assert k["ONEDNN_MAX_CPU_ISA"] == "SSE41" and k["MKL_CBWR"] == "COMPATIBLE"
    assert set(rows_p["kernels"]) == {"default:default"}
    # The default mode, with the user's own MKL_CBWR: theirs wins, and the record says it was theirs.
    user, rows_u = _cell(tmp_path, "user", {"MKL_CBWR": "COMPATIBLE", "FLATBENCH_KERNELS": ""}, zoo_dir)
    k = user["provenance"]["kernels"]
    assert k["MKL_CBWR"] == "COMPATIBLE (user)"
    if {"avx2", "fma"} <= kernels.cpu_flags():
        assert k["mode"] == "avx2" and k["aten_capability"] == "AVX2" and k["ONEDNN_MAX_CPU_ISA"] == "AVX2"
        assert set(rows_u["kernels"]) == {"avx2:avx2"}
    # Where a cell was computed is not what it is: both runs are one cell.
    assert portable["cell_id"] == user["cell_id"] and set(rows_p["cell_id"]) == set(rows_u["cell_id"])
    # The report filters on it like on any column.
    monkeypatch.setenv("WANDB_MODE", "offline")
    rc, err = report_main([tmp_path / "portable", "--filter", "kernels=default:default", "--out", tmp_path / "rep"], capsys)
    assert rc == 0, err
    assert set(pd.read_csv(tmp_path / "rep" / "results.csv")["kernels"]) == {"default:default"}
    rc, err = report_main([tmp_path / "portable", "--filter", "kernels=native:avx512", "--out", tmp_path / "rep2"], capsys)
    assert rc == 2 and "default:default" in err


def test_provenance_names_code_libraries_weights_and_hardware(zoo_dir, tmp_path):
    meta, rows = _cell(tmp_path, "cell", {}, zoo_dir)
    prov = meta["provenance"]
    assert prov["flatbench"] == __version__ and prov["torch"] == torch.__version__
    assert prov["python"] == __import__("platform").python_version()
    assert prov["hardware"] == kernels.cpu_model() and prov["device"] == "cpu"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0 and (ROOT / ".git").exists():
        assert prov["git_commit"].split("+")[0] == head.stdout.strip()
    # The surrogate's and every target's weights file, hashed: the pinned files' own SHA-256.
    assert set(prov["weights_sha256"]) == {"digits-cnn", "digits-mlp"}
    if zoo_dir is None:
        for name, digest in prov["weights_sha256"].items():
            assert digest == pinned_sidecar(name)["sha256"], name
    for col in ("torch_version", "git_commit", "hardware", "kernels"):
        assert rows[col].nunique() == 1, col
    assert rows["torch_version"].iloc[0] == torch.__version__


def test_bad_kernel_mode_is_one_line(tmp_path):
    p = command(["flatbench", "method=ifgsm"], cwd=tmp_path,
                extra_env={"FLATBENCH_KERNELS": "avx9"})
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "flatbench: error: FLATBENCH_KERNELS='avx9' is not one of avx2, default, native"]


def test_a_cpu_without_avx2_is_left_native(monkeypatch):
    monkeypatch.setattr(kernels, "_effective", "")
    monkeypatch.setattr(kernels, "_pinned", {})
    monkeypatch.setattr(kernels, "cpu_flags", lambda: {"sse4_1", "avx"})
    monkeypatch.setattr(kernels.platform, "machine", lambda: "x86_64")
    for var in kernels.VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("FLATBENCH_KERNELS", raising=False)
    assert kernels.pin_kernels() == {}
    assert kernels._effective == "native"
    assert not any(v in __import__("os").environ for v in kernels.VARIABLES)
