"""Sweeps that search: the cell's objective, the Optuna experiment, W&B groups per sweep, and the
local SLURM script's refusals (its cluster itself is exercised in test_slurm.py)."""
import math
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import ROOT, command, run


TINY = ["n_images=8", "targets=digits_small", "progress=false"]


def _bb_mean(cell: Path) -> float:
    df = pd.read_csv(cell / "results.csv")
    return float(df[df["role"] == "black-box"]["asr"].mean())


def test_cell_returns_its_objective_and_a_bad_objective_fails_at_startup(trained_zoo, zoo_dir, tmp_path):
    out = tmp_path / "run"
    p = run(["flatbench", "method=ifgsm", "targets=digits", "objective=digits-vit", "n_images=16", "progress=false",
             f"hydra.run.dir={out}"], zoo_dir, tmp_path)
    df = pd.read_csv(out / "results.csv").set_index("target")
    got = float(re.search(r"objective \(digits-vit ASR, %\): ([\d.]+)", p.stdout + p.stderr).group(1))
    assert got == pytest.approx(df.loc["digits-vit", "asr"], abs=0.005)

    from flatbench.cell import cell_objective
    flat = df.reset_index()
    assert cell_objective(flat, "black-box") == pytest.approx(flat[flat["role"] == "black-box"]["asr"].mean())
    assert cell_objective(flat, "white-box") == pytest.approx(df.loc["digits-cnn", "asr"])
    assert cell_objective(flat, "all") == pytest.approx(flat["asr"].mean())
    assert math.isnan(cell_objective(flat, "defense"))  # no defended target here: the trial fails, the run does not

    bad = command(["flatbench", "objective=nosuch", *TINY, f"hydra.run.dir={tmp_path / 'bad'}"],
                  cwd=tmp_path, zoo_dir=zoo_dir)
    assert bad.returncode == 1
    line = bad.stderr.strip().splitlines()[-1]
    assert "objective='nosuch'" in line and "black-box" in line and "digits-mlp" in line
    assert not (tmp_path / "bad" / "results.csv").exists()


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_optuna_search_every_trial_a_cell_and_the_best_printed(trained_zoo, zoo_dir, tmp_path):
    sweep = tmp_path / "search"
    p = run(["flatbench", "-m", "experiment=digits_search", "hydra.sweeper.n_trials=3", *TINY,
             f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    text = p.stdout + p.stderr
    cells = sorted(d for d in sweep.iterdir() if (d / "cell.json").exists())
    assert [d.name for d in cells] == ["0", "1", "2"]
    # Every trial's sampled settings are its cell's columns.
    for d in cells:
        over = dict(o.split("=", 1) for o in yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text()))
        row = pd.read_csv(d / "results.csv").iloc[0]
        assert row["beta"] == pytest.approx(float(over["estimator.beta"]))
        assert row["zeta"] == pytest.approx(float(over["estimator.zeta"]))
        assert row["n_samples"] == int(over["estimator.n_samples"]) and row["attack"] == "PGN"
    # The sampler is seeded: trial 0 draws numpy's RandomState(0) first uniforms.
    first = dict(o.split("=", 1) for o in yaml.safe_load((sweep / "0" / ".hydra" / "overrides.yaml").read_text()))
    assert float(first["estimator.beta"]) == pytest.approx(0.5488135039273248)
    assert float(first["estimator.zeta"]) == pytest.approx(0.5 + 5.5 * 0.7151893663724195)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    objectives = [_bb_mean(d) for d in cells]
    assert best["best_value"] == pytest.approx(max(objectives))
    assert "Best parameters:" in text and "Best value:" in text
    # The report reads the search like any sweep: one row per trial.
    rep = run(["flatbench-report", str(sweep)], zoo_dir, tmp_path)
    table = pd.read_csv(sweep / "report" / "results.csv")
    assert table["cell_id"].nunique() == 3 and "black-box mean" in rep.stdout


def _wandb_bytes(run_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in run_dir.glob("*.wandb"))


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_wandb_runs_of_a_sweep_share_a_group_and_the_report_joins_it(trained_zoo, zoo_dir, tmp_path):
    sweep = tmp_path / "outputs" / "sweeps" / "mysweep" / "2026-01-02_03-04-05"
    run(["flatbench", "-m", "logger=wandb", "name=mysweep", "method=ifgsm,mifgsm", *TINY, f"hydra.sweep.dir={sweep}"],
        zoo_dir, tmp_path)
    group = b"mysweep-2026-01-02_03-04-05"
    for num, method in (("0", "ifgsm"), ("1", "mifgsm")):
        runs = list((sweep / num / "wandb").glob("offline-run-*"))
        assert len(runs) == 1
        blob = _wandb_bytes(runs[0])
        assert group in blob
        assert f"method={method}".encode() in blob       # the swept setting names the run
        assert f'"overrides":["logger=wandb","name=mysweep","method={method}"'.encode() in blob  # and in its config
    run(["flatbench-report", str(sweep), "--wandb", "fb-test"], zoo_dir, tmp_path)
    report_runs = list((sweep / "report" / "wandb").glob("offline-run-*"))
    assert len(report_runs) == 1 and group in _wandb_bytes(report_runs[0])
    # A user-given group wins, for the cells and (with --wandb-group) the report.
    other = tmp_path / "other"
    run(["flatbench", "-m", "logger=wandb", "logger.group=ablation-1", "method=ifgsm", *TINY,
         f"hydra.sweep.dir={other}"], zoo_dir, tmp_path)
    assert b"ablation-1" in _wandb_bytes(next((other / "0" / "wandb").glob("offline-run-*")))
    from flatbench.report import report_group
    assert report_group([other]) == "ablation-1" and report_group([sweep]) == group.decode()


def test_slurm_script_says_what_it_needs(tmp_path):
    script = ROOT / "scripts" / "slurm_local.sh"
    env = dict(os.environ, FLATBENCH_SLURM_DIR=str(tmp_path / "cluster"))
    p = subprocess.run(["bash", str(script), "status"], env=env, capture_output=True, text=True)
    assert p.returncode == 1 and "slurmctld: stopped" in p.stdout
    p = subprocess.run(["bash", str(script), "nonsense"], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "start|stop|status|env" in p.stderr
    if os.geteuid() != 0 or not Path("/usr/sbin/runuser").exists():
        pytest.skip("the not-root message needs root (to run the script as another user)")
    # The script on stdin: the checkout may sit in a directory only root may enter.
    p = subprocess.run(["/usr/sbin/runuser", "-u", "nobody", "--", "bash", "-s", "start"], input=script.read_text(),
                       env=env, capture_output=True, text=True, cwd="/")
    assert p.returncode == 1 and "needs root" in p.stderr
