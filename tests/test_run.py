"""End to end: the flatbench command on a slice of the testbed, a sweep, the report, W&B offline."""
import pandas as pd
import pytest

from flatbench.entry.settings import load_settings

from flatbench.cell.columns import COLUMNS
from helpers import SMALL, compose_config, run, zoo_env

def test_single_cell_writes_schema(trained_zoo, zoo_dir, tmp_path):
    out = tmp_path / "run"
    run(["flatbench", "method=pgn", "estimator.n_samples=2", *SMALL, f"hydra.run.dir={out}"], zoo_dir, tmp_path)
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    assert len(df) == 2 and set(df["target"]) == {"digits-cnn", "digits-mlp"}
    for col in ("asr", "asr_clean_correct", "clean_acc"):
        assert df[col].between(0, 100).all()
    assert (df["attack"] == "PGN").all() and (df["n_samples"] == 2).all() and (df["eps"] == 32).all()
    assert df.set_index("target").loc["digits-cnn", "role"] == "white-box"
    assert df.set_index("target").loc["digits-mlp", "role"] == "black-box"
    assert (df["linf_mean"] <= 32 + 1e-9).all() and df["cell_id"].nunique() == 1
    assert (df["grad_evals"] == 8 * 10 * 2 * 2).all()
    from flatbench.cell.store import load_adv
    adv, ids = load_adv(out / "adv.safetensors")
    assert adv.dtype.is_floating_point is False and len(ids) == 8
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == 16 and set(pred.columns) >= {"image_id", "clean_pred", "adv_pred"}


def test_sweep_then_report(trained_zoo, zoo_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", "method=ifgsm,mifgsm", *SMALL, f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    p = run(["flatbench-report", str(sweep)], zoo_dir, tmp_path)
    for name in ("results.csv", "table.md", "table.tex", "heatmap.png"):
        assert (sweep / "report" / name).stat().st_size > 0, name
    merged = pd.read_csv(sweep / "report" / "results.csv")
    assert len(merged) == 4 and merged["cell_id"].nunique() == 2
    md = (sweep / "report" / "table.md").read_text()
    assert "I-FGSM" in md and "MI-FGSM" in md and "black-box mean" in md and "*" in md
    assert "\\begin{tabular}" in (sweep / "report" / "table.tex").read_text()
    assert "I-FGSM" in p.stdout
    import matplotlib.image as mpimg
    img = mpimg.imread(sweep / "report" / "heatmap.png")
    assert img.shape[0] > 100 and img.shape[1] > 200 and img[..., :3].std() > 0.05


def test_report_cli_errors(tmp_path):
    from flatbench.report import main
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path)]) == 2


def test_wandb_offline_run_holds_the_table(trained_zoo, zoo_dir, tmp_path):
    out = tmp_path / "run"
    run(["flatbench", "logger=wandb", "method=mifgsm", *SMALL, f"hydra.run.dir={out}"], zoo_dir, tmp_path)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list(runs[0].rglob("results_*.table.json"))
    assert tables, sorted(str(p) for p in runs[0].rglob("*"))
    import json
    t = json.loads(tables[0].read_text())
    assert "asr" in t["columns"] and len(t["data"]) == 2
    # Offline, the config travels in the run's transaction log (synced by `wandb sync`).
    log = next(runs[0].glob("*.wandb")).read_bytes()
    assert b"surrogate" in log and b"digits-cnn" in log and b"estimator" in log


def test_wandb_finishes_after_a_crash(trained_zoo, zoo_dir, tmp_path, monkeypatch):
    """A job that fails still finishes its W&B run, so the next job of a multirun starts clean."""
    import flatbench.cell as cell
    import flatbench.cell.crafting as crafting

    monkeypatch.setenv("WANDB_MODE", "offline")
    for k, v in zoo_env(zoo_dir).items():
        monkeypatch.setenv(k, v)
    cfg = compose_config(["logger=wandb", "n_images=4", "targets=digits_small", "progress=false",
                    f"paths.cache_dir={tmp_path / 'cache'}"])

    def boom(*a, **k):
        raise RuntimeError("crash in crafting")

    monkeypatch.setattr(crafting, "craft", boom)
    with pytest.raises(RuntimeError, match="crash"):
        cell.run_cell(load_settings(cfg), tmp_path / "a")
    import wandb
    assert wandb.run is None
    monkeypatch.undo()
    monkeypatch.setenv("WANDB_MODE", "offline")
    df = cell.run_cell(load_settings(cfg), tmp_path / "b")
    assert len(df) == 2 and wandb.run is None
