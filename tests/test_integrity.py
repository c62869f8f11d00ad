"""Every result row tells the truth (issue 12): reruns, `evaluate`, reports and sweeps never
mislabel, overwrite or lose results. Each test reproduces a defect of the code before the fix
through the command a user types."""
import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from flatbench.cell.store import load_adv
from helpers import command, compose_config, report_main, run, zoo_env

SMALL = ["targets=digits_small", "progress=false"]


def _env(zoo_dir, **extra):
    return dict(os.environ, **zoo_env(zoo_dir), WANDB_MODE="offline", OMP_NUM_THREADS="1", **extra)


def _call(args, zoo_dir, cwd, **extra):
    return command(args, cwd=cwd, env=_env(zoo_dir, **extra), timeout=600)


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- 1. reruns never relabel

def _check_rows_describe_images(out: Path, eps: float, attack: str, seed: int) -> tuple:
    df = pd.read_csv(out / "results.csv")
    meta = json.loads((out / "cell.json").read_text())
    assert (df["eps"] == eps).all() and (df["attack"] == attack).all() and (df["seed"] == seed).all()
    assert (df["cell_id"] == meta["cell_id"]).all()
    adv, _ = load_adv(out / "adv.safetensors")
    from flatbench.data import DATASETS
    clean = DATASETS.build("digits").subset(len(adv)).images
    linf = (adv.int() - clean.int()).abs().amax(dim=(1, 2, 3)).float()
    # The row's linf_mean is the stored images' own, and it lies inside the row's eps.
    assert df["linf_mean"].iloc[0] == pytest.approx(linf.mean().item(), abs=1e-3)
    assert (linf <= eps).all()
    return meta["cell_id"], adv


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_rerun_into_the_same_dir_with_other_settings_never_relabels(trained_zoo, zoo_dir, tmp_path):
    out = tmp_path / "D"
    base = ["flatbench", "n_images=12", *SMALL, f"hydra.run.dir={out}"]
    first = run(base + ["eps=32"], zoo_dir, tmp_path)
    id32, adv32 = _check_rows_describe_images(out, 32, "MI-FGSM", 0)
    # Before the fix: "reusing the stored adversarial set" and eps=8 rows on eps=32 images.
    second = run(base + ["eps=8"], zoo_dir, tmp_path)
    log = second.stdout + second.stderr
    assert "reusing the stored adversarial set" not in log
    assert f"holds the results of cell {id32}" in log and "replac" in log
    id8, adv8 = _check_rows_describe_images(out, 8, "MI-FGSM", 0)
    assert id8 != id32 and not torch.equal(adv8, adv32)
    # Another method, then another seed, into the same directory.
    run(base + ["eps=8", "method=pgn", "estimator.n_samples=2"], zoo_dir, tmp_path)
    id_pgn, adv_pgn = _check_rows_describe_images(out, 8, "PGN", 0)
    run(base + ["eps=8", "method=pgn", "estimator.n_samples=2", "seed=5"], zoo_dir, tmp_path)
    id_seed, adv_seed = _check_rows_describe_images(out, 8, "PGN", 5)
    assert len({id32, id8, id_pgn, id_seed}) == 4
    assert not torch.equal(adv_pgn, adv_seed)
    # Back to the first settings: the cached set of that cell is reused, and it is that cell's.
    back = run(base + ["eps=32"], zoo_dir, tmp_path)
    assert "reusing the stored adversarial set" in back.stdout + back.stderr
    again32, adv_again = _check_rows_describe_images(out, 32, "MI-FGSM", 0)
    assert again32 == id32 and torch.equal(adv_again, adv32)
    assert first.returncode == 0


def test_dir_without_cache_never_lends_its_images_to_another_cell(trained_zoo, zoo_dir, tmp_path):
    """The old fallback read D/adv.safetensors when the cache had no set for the current id."""
    out = tmp_path / "D"
    run(["flatbench", "n_images=12", "eps=32", *SMALL, f"hydra.run.dir={out}", "paths.cache_dir=c1"], zoo_dir, tmp_path)
    id32, _ = _check_rows_describe_images(out, 32, "MI-FGSM", 0)
    p = run(["flatbench", "n_images=12", "eps=16", *SMALL, f"hydra.run.dir={out}", "paths.cache_dir=c2"], zoo_dir,
            tmp_path)
    assert "reusing the stored adversarial set" not in p.stdout + p.stderr
    _check_rows_describe_images(out, 16, "MI-FGSM", 0)


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_evaluate_with_other_settings_refuses_and_changes_nothing(trained_zoo, zoo_dir, tmp_path):
    out = tmp_path / "D"
    run(["flatbench", "n_images=12", "eps=32", *SMALL, f"hydra.run.dir={out}"], zoo_dir, tmp_path)
    before = _hashes(out)
    # Same set under another cache dir too: the fallback to D's own files must not apply either.
    for extra in ([], ["paths.cache_dir=elsewhere"]):
        p = _call(["flatbench", "evaluate", str(out), "eps=16", *extra], zoo_dir, tmp_path)
        assert p.returncode == 1, p.stderr[-2000:]
        lines = p.stderr.strip().splitlines()
        assert lines[-1].startswith("flatbench: error:") and "Traceback" not in p.stderr
        assert "holds cell" in lines[-1] and "eps" in lines[-1]
        assert _hashes(out) == before
    # Adding targets to the same cell still works, and reuses its own set.
    ok = run(["flatbench", "evaluate", str(out), "targets=digits"], zoo_dir, tmp_path)
    assert "reusing the stored adversarial set" in ok.stdout + ok.stderr
    assert len(pd.read_csv(out / "results.csv")) == 6


def _as_flatbench_0_1(cell: Path) -> None:
    """Rewrite a cell's records as flatbench 0.1 wrote them: the estimator was `penalty` (the
    plain gradient `none`) in its overrides and semantic settings, hence another cell id."""
    from flatbench.cell.plan import cell_hash

    ov = cell / ".hydra" / "overrides.yaml"
    ov.write_text(ov.read_text().replace("estimator.", "penalty."))
    meta = json.loads((cell / "cell.json").read_text())
    sem = meta["semantic"]
    name, params = sem.pop("estimator")
    sem["penalty"] = ["none" if name == "plain" else name, params]
    meta["cell_id"] = cell_hash(sem)
    (cell / "cell.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("extra", [["method=pgn", "estimator.n_samples=2"], ["method=ifgsm"]],
                         ids=["old-override", "old-id"])
def test_evaluate_refuses_a_cell_of_flatbench_0_1_and_changes_nothing(trained_zoo, zoo_dir, tmp_path, extra):
    out = tmp_path / "old"
    run(["flatbench", "n_images=8", *SMALL, *extra, f"hydra.run.dir={out}"], zoo_dir, tmp_path)
    _as_flatbench_0_1(out)
    before = _hashes(out)
    p = _call(["flatbench", "evaluate", str(out), "targets=digits"], zoo_dir, tmp_path)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "error" in lines[-1] and "flatbench 0.1" in lines[-1], lines[-1]
    assert _hashes(out) == before


def test_cell_id_holds_the_device_type():
    """CPU and CUDA generators draw different noise: a set crafted on one is not the other's."""
    from flatbench.cell.plan import cell_hash, hashed_settings
    from flatbench.attacks import build_attack
    from flatbench.cell.plan import load_data
    from flatbench.entry.config import attack_kwargs, resolve

    cfg = compose_config(["n_images=4", "method=pgn"])
    s = resolve(cfg)
    attack = build_attack(None, **attack_kwargs(s))
    data = load_data(s)
    cpu = hashed_settings(s, attack, data, device=torch.device("cpu"))
    cuda = hashed_settings(s, attack, data, device=torch.device("cuda", 1))
    assert cpu["device"] == "cpu" and cuda["device"] == "cuda"
    assert cell_hash(cpu) != cell_hash(cuda)
    assert hashed_settings(s, attack, data, device=torch.device("cuda", 0)) == cuda


# ---------------------------------------------------------------- 2. reports never write their inputs

@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_every_report_output_leaves_the_inputs_byte_identical(trained_zoo, zoo_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", "n_images=8", *SMALL, "method=mifgsm,pgn", "eps=16,32", "flatness=on",
         "flatness.k_samples=4", "flatness.power_iters=2", "flatness.worst_steps=2", "flatness.landscape_points=5", f"hydra.sweep.dir={sweep}"],
        zoo_dir, tmp_path)
    cells = sorted(p.parent for p in sweep.glob("*/cell.json"))
    assert len(cells) == 4
    before = _hashes(sweep)
    full = ["--filter", "targeted=false", "--mcnemar", "PGN", "MI-FGSM", "--plot-param", "eps", "--flatness",
            "sharp_mean", "--landscape", "MI-FGSM", "PGN", "--compare", "published", "--wandb", "fb-test"]
    p = run(["flatbench-report", str(sweep), *full], zoo_dir, tmp_path)
    written = {k for k in _hashes(sweep) if k not in before}
    assert all(k.startswith("report/") for k in written), written
    for name in ("results.csv", "table.md", "table.tex", "heatmap.png", "table_ci.md", "mcnemar.md", "compare.md",
                 "flatness.md", "landscape_compare.png", "asr_vs_eps.png"):
        assert (sweep / "report" / name).is_file(), name
    assert str(sweep / "report" / "table.md") in p.stdout
    # Before the fix: a cell directory as input was its own output, and --filter replaced its results.csv.
    cell = cells[0]
    run(["flatbench-report", str(cell), "--filter", "target=digits-cnn"], zoo_dir, tmp_path)
    assert len(pd.read_csv(cell / "results.csv")) == 2
    assert len(pd.read_csv(cell / "report" / "results.csv")) == 1
    # An --out that would replace an input file is refused before anything is written.
    for out in (cell, cells[1]):
        bad = _call(["flatbench-report", str(sweep), "--out", str(out)], zoo_dir, tmp_path)
        assert bad.returncode == 2 and "input" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    after = _hashes(sweep)
    assert {k: v for k, v in after.items() if k in before} == before


# ---------------------------------------------------------------- 3. one failing cell never stops a sweep

@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_multirun_with_a_failing_middle_cell_finishes_the_others(trained_zoo, zoo_dir, tmp_path):
    sweep = tmp_path / "sweep"
    p = _call(["flatbench", "-m", "n_images=8", *SMALL, "surrogate=digits-cnn,digits-nosuch,digits-mlp",
               f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    assert p.returncode == 1, p.stderr[-3000:]
    assert (sweep / "0" / "cell.json").is_file() and (sweep / "2" / "cell.json").is_file()
    assert not (sweep / "1" / "cell.json").exists()
    err = json.loads((sweep / "1" / "error.json").read_text())
    assert err["type"] == "ConfigError" and "digits-nosuch" in err["message"] and "Traceback" in err["traceback"]
    assert "surrogate=digits-nosuch" in " ".join(err["overrides"])
    lines = p.stderr.strip().splitlines()
    assert any(ln.startswith("flatbench: cell 1 failed:") and "digits-nosuch" in ln for ln in lines)
    assert lines[-1].startswith("flatbench: 1 of 3 cells failed:") and "1 (surrogate=digits-nosuch)" in lines[-1]
    assert "Traceback" not in p.stderr
    # The finished cells are a sweep like any other for the report; the failed one is not in it.
    run(["flatbench-report", str(sweep)], zoo_dir, tmp_path)
    assert set(pd.read_csv(sweep / "report" / "results.csv")["surrogate"]) == {"digits-cnn", "digits-mlp"}
    # A rerun that succeeds clears the cell's error record.
    fixed = _call(["flatbench", "-m", "n_images=8", *SMALL, "surrogate=digits-cnn,digits-cnn-bn,digits-mlp",
                   f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert not (sweep / "1" / "error.json").exists() and (sweep / "1" / "cell.json").is_file()


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_single_run_failure_is_one_line_and_full_error_shows_the_traceback(trained_zoo, zoo_dir, tmp_path):
    args = ["flatbench", "n_images=8", *SMALL, "surrogate=digits-nosuch", f"hydra.run.dir={tmp_path / 'r'}"]
    p = _call(args, zoo_dir, tmp_path)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("flatbench: error: ConfigError")
    full = _call(args, zoo_dir, tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr and "load_surrogate" in full.stderr
    mfull = _call(["flatbench", "-m", "n_images=8", *SMALL, "surrogate=digits-nosuch",
                   f"hydra.sweep.dir={tmp_path / 's'}"], zoo_dir, tmp_path, HYDRA_FULL_ERROR="1")
    assert mfull.returncode == 1 and "Traceback" in mfull.stderr and "load_surrogate" in mfull.stderr


def test_programming_errors_keep_their_traceback(monkeypatch):
    """Only errors flatbench raises on purpose become one line; a KeyError from a bug does not."""
    from flatbench.entry import errors
    from flatbench.core.registry import ConfigError

    def bug():
        return {}["missing"]

    with pytest.raises(KeyError):
        errors.guarded(bug)

    def bad_config():
        raise ConfigError("eps=0 is out of range")

    with pytest.raises(SystemExit) as exc:
        errors.guarded(bad_config)
    assert exc.value.code == 1
    with pytest.raises(RuntimeError):
        errors.guarded(lambda: (_ for _ in ()).throw(RuntimeError("shape mismatch in a bug")))


# ---------------------------------------------------------------- 4. filters parse their values

def _two_cell_sweep(zoo_dir, tmp_path, extra):
    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", "n_images=8", *SMALL, *extra, f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    return sweep


def test_filters_parse_booleans_and_numbers_and_name_existing_values(trained_zoo, zoo_dir, tmp_path, capsys, monkeypatch):
    sweep = _two_cell_sweep(zoo_dir, tmp_path, ["method=ifgsm,mifgsm"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    for value in ("False", "false", "0"):
        rc, err = report_main([sweep, "--filter", f"targeted={value}", "--out", tmp_path / value], capsys)
        assert rc == 0, err
        assert len(pd.read_csv(tmp_path / value / "results.csv")) == 4
    for value in ("True", "true", "1"):
        rc, err = report_main([sweep, "--filter", f"targeted={value}"], capsys)
        assert rc == 2 and "targeted" in err and "False" in err
    rc, err = report_main([sweep, "--filter", "eps=32.0", "--filter", "attack=I-FGSM"], capsys)
    assert rc == 0, err
    assert set(pd.read_csv(sweep / "report" / "results.csv")["attack"]) == {"I-FGSM"}
    rc, err = report_main([sweep, "--filter", "eps=16"], capsys)
    assert rc == 2 and "eps=16" in err and "32" in err
    rc, err = report_main([sweep, "--filter", "eps=abc"], capsys)
    assert rc == 2 and "number" in err
    # The console script is this main: one process start shows the same refusal.
    p = _call(["flatbench-report", str(sweep), "--filter", "eps=abc"], zoo_dir, tmp_path)
    assert p.returncode == 2 and "number" in p.stderr


# ---------------------------------------------------------------- 5. tables never average differing cells

@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_tables_and_mcnemar_never_mix_cells_that_differ_in_a_setting(trained_zoo, zoo_dir, tmp_path):
    sweep = _two_cell_sweep(zoo_dir, tmp_path, ["method=ifgsm,mifgsm", "steps=5,10", "batch_size=4,8"])
    assert len(list(sweep.glob("*/cell.json"))) == 8
    run(["flatbench-report", str(sweep), "--mcnemar", "MI-FGSM", "I-FGSM"], zoo_dir, tmp_path)
    md = (sweep / "report" / "table.md").read_text()
    body = [ln for ln in md.splitlines() if ln.startswith("| ") and "black-box mean" not in ln]
    assert len(body) == 8, md
    assert "batch_size" in md.splitlines()[0] and "steps" in md.splitlines()[0]
    mc = pd.read_csv(sweep / "report" / "mcnemar.csv")
    # 4 pairs (steps x batch_size) x 2 targets; before the fix every MI cell met every I cell (16 x 2).
    assert len(mc) == 8 and {"steps", "batch_size"} <= set(mc.columns)
    assert not mc.duplicated(["steps", "batch_size", "target"]).any()
    cells = pd.read_csv(sweep / "report" / "results.csv")
    for r in mc.itertuples():
        sub = cells[(cells["steps"] == r.steps) & (cells["batch_size"] == r.batch_size) & (cells["target"] == r.target)]
        assert r.asr_a == pytest.approx(sub[sub["attack"] == "MI-FGSM"]["asr"].item())
        assert r.asr_b == pytest.approx(sub[sub["attack"] == "I-FGSM"]["asr"].item())


def test_every_semantic_setting_is_a_column(trained_zoo, zoo_dir, tmp_path):
    """What enters cell_id is in the row, so a table can always tell two cells apart."""
    out = tmp_path / "r"
    run(["flatbench", "n_images=4", *SMALL, "method=pgn_dim_tim", "estimator.n_samples=2", f"hydra.run.dir={out}"],
        zoo_dir, tmp_path)
    df = pd.read_csv(out / "results.csv")
    for col in ("batch_size", "amp", "pretrained", "device", "lookahead", "dim.resize_rate", "tim.kernel_size",
                "data_digest", "target_rule"):
        assert col in df.columns, col


def test_a_report_reads_cells_of_flatbench_0_1_under_the_new_names_and_leaves_them_alone(trained_zoo, zoo_dir, tmp_path):
    """0.1 wrote the estimator as `penalty` (columns penalty, penalty.*) and the plain gradient as
    `none`: a report over old and new cells reads both under 0.2's names; the old file is not rewritten."""
    sweep = _two_cell_sweep(zoo_dir, tmp_path, ["method=ifgsm,mifgsm"])
    old = next(f for f in sweep.glob("*/results.csv") if pd.read_csv(f)["attack"].iloc[0] == "I-FGSM")
    df = pd.read_csv(old)
    assert set(df["estimator"]) == {"plain"}
    df = df.rename(columns={c: c.replace("estimator", "penalty") for c in df.columns if c.startswith("estimator")})
    df["penalty"] = "none"
    df.to_csv(old, index=False)
    before = old.read_bytes()
    run(["flatbench-report", str(sweep), "--filter", "estimator=plain", "--out", str(tmp_path / "r")], zoo_dir, tmp_path)
    got = pd.read_csv(tmp_path / "r" / "results.csv")
    assert "penalty" not in got.columns and set(got["estimator"]) == {"plain"}
    assert set(got["attack"]) == {"I-FGSM", "MI-FGSM"} and len(got) == 4
    assert old.read_bytes() == before
