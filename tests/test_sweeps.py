"""Sweeps at scale on CPU: launchers, data-parallel cells, resume after kills, caches, statistics."""
import json
import math
import os
import signal
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from flatbench.measures.statistics import mcnemar, wilson
from flatbench.cell.store import load_adv
from helpers import BIN, SMALL, command, run, zoo_env

PGN_SMALL = ["method=pgn", "estimator.n_samples=2", "targets=digits_small", "progress=false"]


def _env(zoo_dir, **extra):
    return dict(os.environ, **zoo_env(zoo_dir), WANDB_MODE="offline", OMP_NUM_THREADS="1", **extra)


def _results(d: Path) -> pd.DataFrame:
    return pd.read_csv(d / "results.csv").sort_values("target").reset_index(drop=True)


SAME = ["asr", "clean_acc", "n_fooled", "linf_mean", "l2_mean", "cell_id", "asr_ci_low", "asr_ci_high"]


# ---------------------------------------------------------------- statistics

def test_wilson_known_values():
    lo, hi = wilson(81, 263)  # Newcombe (1998), Stat. Med. 17:857, example: 0.2553 to 0.3662
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = wilson(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(10, 10)
    assert hi == pytest.approx(1) and lo == pytest.approx(0.7225, abs=1e-4)
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_mcnemar_known_values():
    # The Wikipedia example (b = 121, c = 59): chi2 with continuity correction = 61^2 / 180.
    t = mcnemar(121, 59)
    assert t["chi2"] == pytest.approx(61 ** 2 / 180)
    assert t["p_chi2"] == pytest.approx(math.erfc(math.sqrt(t["chi2"] / 2)))
    assert t["p_exact"] < 1e-5
    assert mcnemar(0, 10)["p_exact"] == pytest.approx(2 / 1024)   # all discordant pairs one way
    assert mcnemar(5, 5)["p_exact"] == 1.0 and mcnemar(0, 0)["p_exact"] == 1.0
    assert mcnemar(3, 7)["p_exact"] == pytest.approx(2 * (1 + 10 + 45 + 120) / 1024)


# ---------------------------------------------------------------- resume, force, kill

@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_rerun_skips_finished_cell_and_force_recomputes(trained_zoo, zoo_dir, tmp_path):
    out = tmp_path / "cell"
    args = ["flatbench", *SMALL, "method=mifgsm", f"hydra.run.dir={out}"]
    first = run(args, zoo_dir, tmp_path)
    assert "evaluated 2 target(s)" in first.stdout + first.stderr
    before = _results(out)
    again = run(args, zoo_dir, tmp_path)
    assert "already finished" in again.stdout + again.stderr and "skipping" in again.stdout + again.stderr
    pd.testing.assert_frame_equal(_results(out), before)
    forced = run(args + ["force=true"], zoo_dir, tmp_path)
    log = forced.stdout + forced.stderr
    assert "evaluated 2 target(s)" in log and "reusing the stored" not in log
    pd.testing.assert_frame_equal(_results(out)[SAME], before[SAME])
    # A new run dir with the same semantic config reuses the cached adversarial set and evaluations.
    other = run(["flatbench", *SMALL, "method=mifgsm", f"hydra.run.dir={tmp_path / 'other'}"], zoo_dir, tmp_path)
    assert "reusing the stored adversarial set" in other.stdout + other.stderr
    assert "evaluated 0 target(s)" in other.stdout + other.stderr


def _start(args, zoo_dir, cwd):
    return subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=cwd, env=_env(zoo_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_batches(cache: Path, n: int, proc, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if len(list(cache.glob("adv/*/batches/*.safetensors"))) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError("the cell finished before it could be interrupted: " + proc.stderr.read()[-2000:])
        time.sleep(0.05)
    raise AssertionError("no batch checkpoints appeared")


LONG = ["method=pgn", "estimator.n_samples=4", "n_images=48", "batch_size=6", "targets=digits_small", "progress=false"]


# SIGTERM's stop-and-resume is also tried on the scheduler (tests/test_slurm.py, scontrol requeue
# and scancel --signal=TERM): its variant here runs with make test-slow.
@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_killed_cell_resumes_and_equals_uninterrupted(trained_zoo, zoo_dir, tmp_path, sig):
    sweep = tmp_path / "sweep"
    args = ["flatbench", "-m", *LONG, "seed=3,4", f"hydra.sweep.dir={sweep}"]
    proc = _start(args, zoo_dir, tmp_path)
    _wait_batches(tmp_path / "outputs" / "cache", 3, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err[-2000:]
        assert "finished batches are kept" in err.splitlines()[-1]
    else:
        assert proc.returncode == -9
    # Nothing partial in place: no rows, no cell marker, no half-written files under the old names.
    assert not list(sweep.glob("*/results.csv")) and not list(sweep.glob("*/cell.json"))
    kept = len(list((tmp_path / "outputs" / "cache").glob("adv/*/batches/*.safetensors")))
    assert kept >= 3
    resumed = run(args, zoo_dir, tmp_path)
    assert len(list(sweep.glob("*/results.csv"))) == 2
    # The uninterrupted reference, in a fresh cache.
    ref = tmp_path / "ref"
    ref.mkdir()
    run(["flatbench", *LONG, "seed=3", f"hydra.run.dir={ref / 'cell'}"], zoo_dir, ref)
    cell0 = next(d for d in sweep.iterdir() if (d / "cell.json").exists() and _results(d)["seed"].iloc[0] == 3)
    pd.testing.assert_frame_equal(_results(cell0)[SAME], _results(ref / "cell")[SAME])
    assert torch.equal(load_adv(cell0 / "adv.safetensors")[0], load_adv(ref / "cell" / "adv.safetensors")[0])
    meta = json.loads((cell0 / "cell.json").read_text())
    assert meta["cell_id"] == _results(ref / "cell")["cell_id"].iloc[0]
    # The report over the resumed sweep has each (cell, target) once.
    run(["flatbench-report", str(sweep)], zoo_dir, tmp_path)
    merged = pd.read_csv(sweep / "report" / "results.csv")
    assert len(merged) == 4 and not merged.duplicated(["cell_id", "target"]).any()
    assert f"resuming: {kept} of 8 batches already finished" in resumed.stdout + resumed.stderr


# ---------------------------------------------------------------- evaluate only what is missing

@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_evaluate_adds_only_missing_targets_and_never_recrafts(trained_zoo, zoo_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", *SMALL, "method=ifgsm,mifgsm", f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    p = run(["flatbench", "evaluate", str(sweep), "targets=digits"], zoo_dir, tmp_path)
    log = p.stdout + p.stderr
    assert log.count("evaluated 4 target(s)") == 2 and log.count("reused 2 from the cache") == 2
    assert log.count("reusing the stored adversarial set") == 2 and "craft" not in p.stderr.replace("crafts", "")
    for cell in sweep.glob("[0-9]*"):
        meta = json.loads((cell / "cell.json").read_text())
        assert sorted(meta["reused"]) == ["digits-cnn", "digits-mlp"]
        assert len(meta["evaluated"]) == 4 and len(_results(cell)) == 6
    again = run(["flatbench", "evaluate", str(sweep), "targets=digits"], zoo_dir, tmp_path)
    assert (again.stdout + again.stderr).count("already finished") == 2
    # Without the cache directory, the cells' own predictions.csv still spare the known pairs.
    import shutil
    shutil.rmtree(tmp_path / "outputs" / "cache")
    p = run(["flatbench", "evaluate", str(sweep), "targets=[digits,digits_small]", "force=false",
             "+targets.extra={model: digits-cnn-bn, role: normal}"], zoo_dir, tmp_path)
    assert (p.stdout + p.stderr).count("evaluated 1 target(s)") == 2
    bad = command(["flatbench", "evaluate", str(tmp_path / "nothing")], cwd=tmp_path,
                  zoo_dir=zoo_dir, extra_env={"OMP_NUM_THREADS": "1"})
    assert bad.returncode == 2 and "no cells" in bad.stderr


def test_evaluate_without_an_adversarial_set_fails_clearly(trained_zoo, zoo_dir, tmp_path):
    out = tmp_path / "cell"
    run(["flatbench", *SMALL, "save_images=false", f"hydra.run.dir={out}"], zoo_dir, tmp_path)
    import shutil
    shutil.rmtree(tmp_path / "outputs" / "cache")
    p = command(["flatbench", "evaluate", str(out), "targets=digits"], cwd=tmp_path,
                zoo_dir=zoo_dir, extra_env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 1 and "never crafts" in p.stderr and "Traceback" not in p.stderr


# ---------------------------------------------------------------- report statistics

@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_report_ci_mcnemar_and_param_plot(trained_zoo, zoo_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", "n_images=24", "targets=digits_small", "progress=false", "method=mifgsm,pgn",
         "eps=8,16", f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    run(["flatbench-report", str(sweep), "--mcnemar", "PGN", "MI-FGSM", "--plot-param", "eps", "--wandb", "fb-test"],
        zoo_dir, tmp_path)
    df = pd.read_csv(sweep / "report" / "results.csv")
    assert ((df["asr_ci_low"] <= df["asr"]) & (df["asr"] <= df["asr_ci_high"])).all()
    mc = pd.read_csv(sweep / "report" / "mcnemar.csv")
    assert len(mc) == 2 * 2 and (mc["n"] == 24).all()  # 2 eps x 2 targets
    flags = pd.concat(pd.read_csv(f) for f in sweep.glob("*/predictions.csv"))
    assert set(flags["fooled"]) <= {0, 1}
    # Independent counts: the discordant pairs recounted from the two cells' predictions.csv, the
    # exact p-value from SciPy's binomial test, and the interval from SciPy's Wilson interval on
    # the fooled count recounted per cell and target.
    from scipy.stats import binomtest
    for r in mc.itertuples():
        fa = flags[(flags["cell_id"] == r.cell_a) & (flags["target"] == r.target)].set_index("image_id")["fooled"]
        fb = flags[(flags["cell_id"] == r.cell_b) & (flags["target"] == r.target)].set_index("image_id")["fooled"]
        assert len(fa) == len(fb) == r.n and set(fa.index) == set(fb.index)
        fb = fb[fa.index]
        assert (r.only_a, r.only_b) == (int(((fa == 1) & (fb == 0)).sum()), int(((fa == 0) & (fb == 1)).sum()))
        k = r.only_a + r.only_b
        want = 1.0 if k == 0 else binomtest(min(r.only_a, r.only_b), k, 0.5).pvalue
        assert r.p_exact == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert (mc["only_a"] + mc["only_b"]).sum() > 0   # something to count
    for r in df.itertuples():
        fooled = flags[(flags["cell_id"] == r.cell_id) & (flags["target"] == r.target)]["fooled"]
        ci = binomtest(int(fooled.sum()), len(fooled)).proportion_ci(method="wilson")
        assert (r.asr_ci_low, r.asr_ci_high) == pytest.approx((100 * ci.low, 100 * ci.high), abs=1e-6)
    assert "[" in (sweep / "report" / "table_ci.md").read_text()
    import matplotlib.image as mpimg
    img = mpimg.imread(sweep / "report" / "asr_vs_eps.png")
    assert img.shape[1] > 400 and img[..., :3].std() > 0.05
    assert list((sweep / "report").glob("wandb/offline-run-*"))


# ---------------------------------------------------------------- launchers and data-parallel cells

@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]])
def test_parallel_launchers_run_two_cells(trained_zoo, zoo_dir, tmp_path, launcher):
    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", *launcher, *SMALL, "method=ifgsm,mifgsm", f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    cells = sorted(sweep.glob("*/results.csv"))
    assert len(cells) == 2
    assert {pd.read_csv(c)["attack"].iloc[0] for c in cells} == {"I-FGSM", "MI-FGSM"}
    if "submitit" in launcher[0]:
        assert (sweep / ".submitit").is_dir()


def test_tasks_per_node_without_a_process_group_fails_at_startup_instead_of_running_copies(zoo_dir, tmp_path):
    """submitit's local executor starts 2 processes per cell with no variables to form a group:
    each would run the whole cell into one directory. Each fails before crafting, and the sweep's
    summary line says why, naming the setting."""
    sweep, out = tmp_path / "sweep", tmp_path / "out"
    p = command(["flatbench", "-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
                 "hydra.launcher.gpus_per_node=0", "method=mifgsm", "surrogate=digits-cnn", "n_images=16",
                 "targets=digits_small", "progress=false", f"paths.output_dir={out}", f"hydra.sweep.dir={sweep}"],
                cwd=tmp_path, zoo_dir=zoo_dir, extra_env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert p.returncode == 1, p.stderr[-3000:]
    summary = [ln for ln in p.stderr.splitlines() if "cells failed" in ln]
    assert len(summary) == 1 and "1 of 1 cells failed" in summary[0] and "no cell finished" in summary[0], p.stderr[-3000:]
    assert "hydra.launcher.tasks_per_node=2 starts 2 tasks for this cell" in summary[0]
    assert "crafted" not in (sweep / "0" / "cli.log").read_text()
    assert not list(out.rglob("*.safetensors")) and not (sweep / "0" / "results.csv").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_torchrun_two_gloo_ranks_equal_single_process(trained_zoo, zoo_dir, tmp_path):
    """Two ranks craft one cell: the same images and rows as one process. With chunk and
    channels_last "measure", each rank has its own tuning file: rank 0 measures, rank 1 does not
    and crafts with rank 0's choice (broadcast); the single process then reads rank 0's file."""
    args = [*PGN_SMALL, "n_images=20", "batch_size=4", "device=cpu", "chunk=measure", "channels_last=measure"]
    multi = tmp_path / "multi"
    p = command(["torchrun", "--nproc-per-node=2", f"--master-port={_free_port()}", "-m", "flatbench",
                 *args, f"hydra.run.dir={multi}", "paths.cache_dir=cache_multi",
                 "paths.tuning_file=" + str(tmp_path / "tuning-rank${oc.env:RANK}.json")], cwd=tmp_path,
                zoo_dir=zoo_dir, extra_env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    log = p.stderr + p.stdout
    assert "rank 1/2" in log
    assert (tmp_path / "tuning-rank0.json").exists() and not (tmp_path / "tuning-rank1.json").exists(), log[-3000:]
    assert log.count("tuning: measured") == 1 and "(rank 0's choice)" in log
    entry = next(iter(json.loads((tmp_path / "tuning-rank0.json").read_text()).values()))
    fmt = "channels_last" if entry["channels_last"] else "contiguous"
    assert (_results(multi)["chunk"] == entry["chunk"]).all() and (_results(multi)["memory_format"] == fmt).all()
    single = tmp_path / "single"
    shutil.copy(tmp_path / "tuning-rank0.json", tmp_path / "tuning-single.json")
    run(["flatbench", *args, f"hydra.run.dir={single}", "paths.cache_dir=cache_single",
         f"paths.tuning_file={tmp_path / 'tuning-single.json'}"], zoo_dir, tmp_path)
    pd.testing.assert_frame_equal(_results(multi)[SAME + ["grad_evals"]], _results(single)[SAME + ["grad_evals"]])
    assert torch.equal(load_adv(multi / "adv.safetensors")[0], load_adv(single / "adv.safetensors")[0])
    pm, ps = pd.read_csv(multi / "predictions.csv"), pd.read_csv(single / "predictions.csv")
    pd.testing.assert_frame_equal(pm, ps)


def test_a_key_of_the_swept_methods_estimator_reaches_every_cell(trained_zoo, zoo_dir, tmp_path):
    """Regression: `flatbench -m method=pgn,gnp estimator.n_samples=2` failed before any cell with
    "unknown key 'estimator.n_samples'. Valid keys of estimator: name.": Hydra composes a sweep's config
    without its swept values, so the key was checked against the default estimator (the plain gradient).
    It now reaches each cell, and `flatbench plan` reads it too; a misspelt key still fails, in each cell,
    naming the valid keys."""
    import pandas as pd

    base = ["estimator.n_samples=2", "steps=1", "n_images=4", "targets=digits_small", "progress=false"]
    run(["flatbench", "-m", "method=pgn,gnp", *base, f"hydra.sweep.dir={tmp_path / 's'}"], zoo_dir, tmp_path)
    df = pd.concat(pd.read_csv(f, dtype={"cell_id": str}) for f in (tmp_path / "s").glob("*/results.csv")).drop_duplicates("cell_id")
    assert df.set_index("attack")["n_samples"].to_dict() == {"PGN": 2, "GNP": 2}
    plan = run(["flatbench", "plan", "-m", "method=pgn,gnp", *base, "--wide"], zoo_dir, tmp_path)
    assert set(df["cell_id"]) <= set(plan.stdout.split())   # the cells the run made: n_samples=2 read
    bad = command(["flatbench", "-m", "method=pgn,gnp", "estimator.n_smples=2", *base[1:],
                   f"hydra.sweep.dir={tmp_path / 'b'}"], zoo_dir, tmp_path)
    assert bad.returncode == 1 and "2 of 2 cells failed" in bad.stderr and "unknown key 'n_smples'" in bad.stderr
    assert "Did you mean 'n_samples'?" in bad.stderr
