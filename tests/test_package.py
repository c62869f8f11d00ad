"""flatbench installs like any other package: a wheel, in a fresh virtual environment outside
the repository, finds its configs, published numbers and pinned weights, runs a cell and a
report from another working directory, and takes a user's own config directory."""
import os
import pytest
import site
import subprocess
import sys
import zipfile

import pandas as pd
from flatbench.models.testbed import TESTBED
from helpers import ROOT, command


def _sh(args, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kw)
    assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-3000:])
    return p


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    dist = tmp_path / "dist"
    _sh([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation", "-q", "-w", dist])
    whl = next(dist.glob("flatbench-*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    for want in ("flatbench/conf/config.yaml", "flatbench/conf/experiment/digits.yaml",
                 "flatbench/conf/published/transferattack_rn50.csv", "flatbench/models/zoo/digits-cnn.safetensors",
                 "flatbench/models/zoo/digits-cnn.json", "flatbench/models/zoo/digits-cnn-3.safetensors",
                 "flatbench/models/zoo/digits-cnn-at.safetensors", "flatbench/conf/targets/digits_defended.yaml"):
        assert want in names, want
    venv = tmp_path / "venv"
    _sh([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    _sh([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", whl])
    # The dependencies (torch, timm, hydra, ...) come from the suite's environment, appended after
    # the new environment's own site-packages, so `flatbench` itself is the wheel's.
    own = _sh([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    with open(os.path.join(own, "zz_deps.pth"), "w") as fh:
        fh.write("\n".join(site.getsitepackages()) + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("FLATBENCH_ZOO", "PYTHONPATH")}
    env["WANDB_MODE"] = "offline"
    where = _sh([py, "-c", "import flatbench; print(flatbench.__file__)"], cwd=work, env=env).stdout
    assert where.startswith(str(venv)), where
    bin_ = venv / "bin"
    _sh([bin_ / "flatbench", "n_images=8", "targets=digits_small", "progress=false", "hydra.run.dir=cell"], cwd=work, env=env)
    df = pd.read_csv(work / "cell" / "results.csv")
    assert len(df) == 2 and (df["attack"] == "MI-FGSM").all()
    _sh([bin_ / "flatbench-report", "cell", "--compare", "published"], cwd=work, env=env)
    assert (work / "cell" / "report" / "table.md").is_file()
    # A user's own config directory: their own zoo and experiment, beside the packaged ones.
    mine = tmp_path / "myconf"
    (mine / "targets").mkdir(parents=True)
    (mine / "experiment").mkdir()
    (mine / "targets" / "two.yaml").write_text("a: {model: digits-mlp}\nb: {model: digits-vit}\n")
    (mine / "experiment" / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - override /targets: two\n"
                                                   "name: mine\nn_images: 8\neps: 24\n")
    _sh([bin_ / "flatbench", "--config-dir", mine, "experiment=mine", "progress=false", "hydra.run.dir=own"], cwd=work,
        env=env)
    own_df = pd.read_csv(work / "own" / "results.csv")
    assert set(own_df["target"]) == {"a", "b"} and (own_df["eps"] == 24).all()
    zoo = _sh([bin_ / "flatbench-zoo", "verify"], cwd=work, env=env)
    assert zoo.stdout.count("ok ") == len(TESTBED) == 22   # 6 architectures x 3 instances, 2 defended CNNs, 2 SAM-trained


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_listing_names_everything_from_the_cli_and_python(tmp_path):
    import flatbench
    from flatbench.attacks import METHODS

    env = dict(os.environ, HF_HUB_OFFLINE="1")

    def cli(*args, rc=0):
        p = command(["flatbench", "list", *args], env=env, timeout=300)
        assert p.returncode == rc, p.stderr[-2000:]
        return p.stdout

    out = cli("methods", "pgn")
    assert "pgn_dim_tim" in out and "PGN (Ge et al." in out and "beta=0.5" in out and "r=alpha" in out
    assert "gnp" not in out.split()  # the pattern filters
    models = cli("models")
    assert "digits-cnn" in models and "(pinned)" in models and "NOT cached" in models and "targets=transferattack" in models
    assert "digits-nosuch" not in models
    zoos = cli("zoos", "defenses")
    assert "inc-v3-jpeg" in zoos and "defense (jpeg)" in zoos
    assert "transferattack_rn18" in cli("experiments") and "nips17" in cli("data")
    assert "flatbench list methods" in cli(rc=2)
    assert {m["name"] for m in flatbench.list_methods()} == set(METHODS)
    assert flatbench.list_methods("gnp_ta")[0]["defaults"]["combine"] == "sum"
    # The six testbed models, their instances 2 and 3, the two defended CNNs, the two trained with SAM, then the three LGV sets of
    # digits-resnet, in the sources' order.
    six = ["digits-mlp", "digits-cnn", "digits-cnn-bn", "digits-resnet", "digits-vit", "digits-mixer"]
    assert [m["name"] for m in flatbench.list_models("digits-*")] == [
        *six, *(f"{n}-2" for n in six), *(f"{n}-3" for n in six), "digits-cnn-at", "digits-cnn-ens-at", "digits-cnn-sam", "digits-resnet-sam", "digits-resnet-lgv", "digits-resnet-lgv-2",
        "digits-resnet-lgv-3"]
    assert {z["name"] for z in flatbench.list_zoos()} >= {"digits", "transferattack", "transferattack_rn18"}
    assert {e["name"] for e in flatbench.list_experiments()} >= {"digits", "transferattack_rn50"}
    assert {d["name"] for d in flatbench.list_data()} == {"digits", "nips17", "transferattack", "imagefolder"}
    helptext = command(["flatbench", "--help"], env=env).stdout
    assert "flatbench list" in helptext and "--config-dir" in helptext


def test_design_map_matches_the_package():
    """Every module of the package is in the design page's map (docs/design.md), and every path the
    map names exists."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "design.md").read_text()
    section = text[text.index("## The package, by layer"):]
    rows = re.findall(r"^\| ([^|]+) \| (.+) \|$", section, flags=re.M)[1:]  # after the header
    pkg = root / "flatbench"
    named = {n: desc for first, desc in rows for n in re.findall(r"`([^`]+)`", first)}
    assert len(named) > 15
    for name in named:
        assert (pkg / name).exists(), f"docs/design.md's map names {name}, which is not in flatbench/"
    for path in sorted(pkg.rglob("*.py")):
        m = path.relative_to(pkg).as_posix()
        if m in named or m in ("__init__.py", "__main__.py"):
            continue
        folders = [m.rsplit("/", k)[0] + "/" for k in range(1, m.count("/") + 1)]   # a/b/c.py: a/b/, a/
        if path.name == "__init__.py" and any(n.startswith(folders[0]) for n in named):
            continue   # a package whose folder or modules the map names
        # else a folder's row names the module: by its name, or (nested) by its path below that folder
        assert any(f"`{m[len(f):]}`" in named[f] or f"`{path.name}`" in named[f] for f in folders if f in named), \
            f"flatbench/{m} is missing from docs/design.md's map"


def test_describe_prints_the_loop_a_run_would_execute():
    """`flatbench describe` composes the config as a run does and prints the assembled loop;
    docs/methods.md is that output for every preset (scripts/methods_page.py --check)."""
    import sys
    from pathlib import Path


    env = dict(os.environ, HF_HUB_OFFLINE="1")

    def cli(*args):
        return command(["flatbench", "describe", *args], env=env,
                       timeout=300)

    p = cli("pgn", "estimator.beta=0.8", "optimizer=nifgsm", "transforms=[dim]", "eps=16")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("# flatbench pgn estimator.beta=0.8 optimizer=nifgsm transforms=[dim] eps=16: "
                               "optimizer=nifgsm estimator=pgn transforms=[dim]\nNI-FGSM+PGN+DIM")
    assert "(1−β)·g1 + β·g2,   β = 0.8" in p.stdout and "x + δ + α·1·m" in p.stdout and "w = DIM(z)" in p.stdout
    assert "ε = 16/255 (linf)" in p.stdout
    for args, expect in ((["pgnn"], "Did you mean 'pgn'?"), (["pgn", "estimator.beta=-1"], "estimator.beta=-1 is out of range; allowed: >= 0"),
                         (["pgn", "penalty.beta=1"], "write estimator.beta=1")):
        bad = cli(*args)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 1 and len(lines) == 1 and expect in lines[0] and "Traceback" not in bad.stderr, bad.stderr
    root = Path(__file__).resolve().parent.parent
    check = subprocess.run([sys.executable, str(root / "scripts" / "methods_page.py"), "--check"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert check.returncode == 0, check.stderr


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_the_gpu_check_dry_run_runs_on_the_cpu(tmp_path):
    """scripts/gpu_check.sh --device cpu --smoke (issue 27): the script a GPU machine runs goes
    end to end here, so a rename in the package cannot break it unseen until a GPU is lent."""
    p = subprocess.run(["bash", "scripts/gpu_check.sh", "--device", "cpu", "--smoke"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900, env={**os.environ, "OUT": str(tmp_path)})
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    rows = pd.read_csv(tmp_path / "smoke.csv")
    assert {"I-FGSM", "MI-FGSM", "PGN", "GNP"} <= set(rows["method"]), rows
    det = [ln for ln in p.stdout.splitlines() if ln.startswith("determinism")]
    assert len(det) == 2 and all("differing between two identical calls: 0 of" in ln for ln in det), det
    assert (tmp_path / "hardware.txt").read_text().startswith("torch ")
    # Batch packing through the crafting stage (issue 36): a row per method, packed and not.
    packing = [ln for ln in p.stdout.splitlines() if ln.startswith(("| ifgsm |", "| mifgsm |", "| gnp |"))]
    assert len(packing) == 3 and all(ln.count("|") == 7 for ln in packing), packing
    # torch.compile against eager (issue 36): each workload eager and compiled, and every row ran.
    compiled = [ln for ln in p.stdout.splitlines() if ln.startswith(("| bare, batch", "| ifgsm crafting", "| pgn crafting"))]
    assert len(compiled) == 6 and sum("| compile (aot_eager) |" in ln for ln in compiled) == 3, compiled
    assert not any("failed:" in ln or "not run" in ln for ln in compiled), compiled
    # The cell part, through the command line: plan, the cell twice, and 2 torchrun processes.
    cell = pd.read_csv(tmp_path / "cell.csv")
    assert list(cell["run"]) == ["first", "second", "torchrun2"] and cell["identical_to_first"].all(), cell
    assert (cell["grad_evals"] == 8 * 2 * 2 * 2).all()   # 8 images x T = 2 x N = 2 x (look-ahead + its neighbour)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("cell:")]
    assert any("differing: 0 of" in ln for ln in lines) and any("differing from one process: 0" in ln for ln in lines), lines


def test_license_and_citation_say_what_pyproject_says():
    """LICENSE is the MIT licence pyproject declares; CITATION.cff is valid CFF 1.2 with the package's
    version and cites the two papers the project is about by their arXiv ids."""
    import tomllib
    from pathlib import Path

    import yaml

    import flatbench

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    licence = (root / "LICENSE").read_text()
    assert project["license"] == "MIT" and licence.startswith("MIT License") and "WITHOUT WARRANTY" in licence
    cff = yaml.safe_load((root / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["message"] and cff["authors"]
    assert str(cff["version"]) == project["version"] == flatbench.__version__
    ids = {i["value"] for r in cff["references"] for i in r["identifiers"]}
    assert ids == {"arXiv:2306.05225", "arXiv:2307.04099"}
    assert all(r["authors"] and r["title"] and r["year"] == 2023 for r in cff["references"])
