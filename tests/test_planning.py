"""flatbench plan (issue 25): the cost of a run or a sweep before it runs, through the command line."""
import pandas as pd
import pytest

from flatbench.entry.settings import load_settings
import torch

from flatbench import create_attack
from flatbench.entry.planning import CellCost, render, totals
from helpers import SMALL, command, compose_config, run, zoo_env

GRID = ["method=mifgsm,pgn,mef,anda", "steps=2", "batch_size=4", *SMALL]   # two batches of 4 per cell


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_plan_predicts_grad_evals_and_counts_only_what_is_left(trained_zoo, zoo_dir, tmp_path):
    from flatbench.cell.store import AdvStore, load_adv

    p1 = tmp_path / "plan1.csv"
    out = run(["flatbench", "plan", "-m", *GRID, "--csv", str(p1)], zoo_dir, tmp_path)
    plan = pd.read_csv(p1).set_index("cell_id")
    assert len(plan) == 4 and (plan["status"] == "new").all() and set(plan["overrides"]) == {
        "method=mifgsm", "method=pgn", "method=mef", "method=anda"}
    assert "projected" in out.stdout and "suggested hydra.launcher.timeout_min=" in out.stdout
    assert any(src.startswith("measured now (best of 3 timings") for src in plan["rate_source"].str.split("; ").explode())
    assert {"cell_id", "grad_evals", "projected_s"} <= set(pd.read_csv(p1).columns) and (plan["projected_s"] > 0).all()
    # Two targets, 8 clean and 8 adversarial images each.
    assert (plan["eval_passes"] == 2 * 2 * 8).all()

    # The sweep itself: each cell's grad_evals column is the plan's number, exactly.
    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", *GRID, f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    done = pd.concat(pd.read_csv(f) for f in sweep.glob("*/results.csv")).drop_duplicates("cell_id").set_index("cell_id")
    assert sorted(done.index) == sorted(plan.index)
    assert (done["grad_evals"] == plan.loc[done.index, "grad_evals"]).all(), (done["grad_evals"], plan["grad_evals"])
    assert plan.loc[done[done["attack"] == "MEF"].index[0], "grad_evals"] == 8 * 2 * 20

    # Half finished: PGN's cell back to one of its two batches crafted and no evaluation; the
    # other cells finished. Planned again: only PGN's missing batch and its evaluation are left.
    pgn = done[done["attack"] == "PGN"].index[0]
    store = AdvStore(tmp_path / "outputs" / "cache", pgn)
    images = load_adv(store.full)[0]
    store.save_batch(0, 4, images[:4])
    store.full.unlink()
    for f in store.evals.glob("*.csv"):
        f.unlink()
    p2 = tmp_path / "plan2.csv"
    run(["flatbench", "plan", "-m", *GRID, "--csv", str(p2)], zoo_dir, tmp_path)
    again = pd.read_csv(p2).set_index("cell_id")
    rest = again.drop(index=pgn)
    assert (rest["status"] == "finished (cached)").all() and (rest["grad_evals"] == 0).all()
    assert (rest["eval_passes"] == 0).all() and (rest["projected_s"] == 0).all()
    row = again.loc[pgn]
    assert row["status"] == "1 of 2 batches crafted" and row["images_left"] == 4 and row["eval_passes"] == 2 * 2 * 8
    assert row["grad_evals"] == create_attack("pgn", torch.nn.Identity(), eps=0.1, steps=2).predicted_grad_evals(4)
    assert row["grad_evals"] == plan.loc[pgn, "grad_evals"] // 2
    assert "on file: cell" in row["rate_source"]   # the finished cells' own rates


def test_a_measurement_keeps_its_fastest_window_and_a_rate_says_its_age_and_load(tmp_path):
    """Issue 36, section 3: load slows a timing and never speeds it up, so the plan keeps the best of
    three short windows (a burst of load in the first window leaves the rate at the quiet speed; one
    window over the whole second would average it in). Every rate on file carries its load and CPUs,
    and the plan's source column says how old it is. Broken variant tried: the mean of the windows."""
    import time as _t

    from flatbench.entry.planning import measure
    from flatbench.cell.rates import rate_note, read_rates, record_rate

    clock = {"t": 0.0, "n": 0}

    def fn():   # a call costs 20 ms while another job runs (the first 12), then 2 ms: on a clock of its own
        clock["n"] += 1
        clock["t"] += 0.02 if clock["n"] <= 12 else 0.002

    real = measure.time.perf_counter
    measure.time.perf_counter = lambda: clock["t"]
    try:
        rate = measure._time(fn, 0.3)
    finally:
        measure.time.perf_counter = real
    assert rate == pytest.approx(500)                    # the quiet speed, not the busy start's 50/s
    record_rate(tmp_path, "craft|x", 123.0, "plan")
    entry = read_rates(tmp_path)["craft|x"]
    assert entry["cpus"] >= 1 and "load" in entry
    now = _t.mktime(_t.strptime(entry["when"], "%Y-%m-%d %H:%M:%S")) + 3 * 3600
    note = rate_note({**entry, "load": 1.5, "cpus": 2}, now=now)
    assert note == "on file: plan (3.0 h old, load 1.5 on 2 CPUs)"
    assert rate_note({"source": "cell ab12"}) == "on file: cell ab12"


def test_totals_and_the_suggested_time_limit():
    cells = [CellCost(0, "method=a", "x", "new", "", 13, 8, 100, 10, 60.0, 20.0, 80.0, "measured now"),
             CellCost(1, "method=b", "y", "finished (cached)", "", 13, 0, 0, 0, 0.0, 0.0, 0.0, "nothing left")]
    tot = totals(cells, startup_s=30.0)
    assert tot["cells"] == 2 and tot["cells_left"] == 1 and tot["grad_evals"] == 100
    assert tot["timeout_min"] == 3   # ceil((80 × 1.5 + 30) / 60)
    text = render(cells, tot)
    assert "projected" in text and "x 1.5 margin + 30.0 s of startup" in text


def test_clean_predictions_are_made_once_per_target_and_data(trained_zoo, zoo_dir, tmp_path, monkeypatch):
    """A sweep of M methods over one data set predicts each target's clean images once, not M
    times; the cache is keyed by the target's key, the data digest and the device type, so a
    cell on other images (or another target spec) never reads it."""

    from flatbench.cell import run_cell
    from flatbench.cell import evaluation

    calls = []
    predict = evaluation.predict

    def counting(model, images, device, batch_size):
        calls.append(len(images))
        return predict(model, images, device, batch_size)

    monkeypatch.setattr(evaluation, "predict", counting)
    common = ["n_images=8", "targets=digits_small", "progress=false", "steps=2", f"paths.zoo_dir={zoo_dir or 'null'}",
              f"paths.cache_dir={tmp_path / 'cache'}"]
    first = run_cell(load_settings(compose_config(["method=mifgsm", *common])), tmp_path / "a")
    assert sum(calls) == 2 * 2 * 8   # two targets: clean and adversarial
    calls.clear()
    second = run_cell(load_settings(compose_config(["method=ifgsm", *common])), tmp_path / "b")
    assert sum(calls) == 2 * 8       # the adversarial images only
    for df in (first, second):
        assert (df.set_index("target")["clean_acc"] == first.set_index("target")["clean_acc"]).all()
    calls.clear()
    other = run_cell(load_settings(compose_config(["method=ifgsm", *common, "n_images=6"])), tmp_path / "c")   # other images: another digest
    assert sum(calls) == 2 * 2 * 6 and len(other) == 2


def test_clean_cache_key_holds_the_images_content_and_device(tmp_path):
    import copy

    from flatbench.cell.evaluation import _read_clean, clean_cache_path
    from flatbench.data import DATASETS

    d = DATASETS.build("digits").subset(8)
    brighter = copy.copy(d)
    brighter.images = (d.images.int() + 1).clamp(max=255).to(d.images.dtype)   # same ids, other pixels
    key = "digits-cnn-0123456789"
    assert clean_cache_path(tmp_path, key, d, "cpu") != clean_cache_path(tmp_path, key, brighter, "cpu")
    assert clean_cache_path(tmp_path, key, d, "cpu") != clean_cache_path(tmp_path, key, d, "cuda")
    assert clean_cache_path(tmp_path, key, d, "cpu") != clean_cache_path(tmp_path, "digits-cnn-other", d, "cpu")
    f = tmp_path / "c.csv"
    f.write_text("image_id,clean_pred\n" + "".join(f"x{i},1\n" for i in range(8)))
    assert _read_clean(f, d) is None   # other image ids: not read


def test_sweep_progress_line_counts_cells_failures_and_projects_the_rest(trained_zoo, zoo_dir, tmp_path):
    import os

    sweep = tmp_path / "sweep"
    env = dict(os.environ, **zoo_env(zoo_dir))
    p = command(["flatbench", "-m", "method=mifgsm,pgn", "surrogate=digits-cnn,digits-nosuch", "steps=2",
                 *SMALL, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env,
                timeout=600)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("flatbench: sweep:")]
    assert len(lines) == 4, p.stderr[-3000:]
    assert lines[-1].startswith("flatbench: sweep: 4 of 4 cells done (2 failed); nothing left")
    assert any("projected" in ln for ln in lines[:-1])
    # The same sweep directory with another command line is another sweep: its line counts its own cells,
    # not the records of the first (it said "5 of 4 cells done (2 failed)" before issue 37's study found it).
    p = command(["flatbench", "-m", "method=ifgsm", "surrogate=digits-cnn", "steps=2", *SMALL,
                 f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, timeout=600)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("flatbench: sweep:")]
    assert lines == ["flatbench: sweep: 1 of 1 cells done (0 failed); nothing left"], p.stderr[-3000:]


def test_progress_line_projects_from_the_plan_and_the_cells_done():
    from flatbench.entry.sweep_progress import progress_line

    state = {"total": 3, "cells": {"a": 100, "b": 300, "c": 50},
             "done": {"a": {"ok": True, "seconds": 10.0, "grad_evals": 100}, "c": {"ok": False, "seconds": 1.0}}}
    # b's 300 evaluations at a's 0.1 s per evaluation: 30 s.
    assert progress_line(state) == ("flatbench: sweep: 2 of 3 cells done (1 failed); about 30 s of cell time left "
                                    "(projected: the plan's gradient evaluations of the 1 cells left at the 1 finished "
                                    "cells' seconds per evaluation)")
    state["done"]["a"]["grad_evals"] = 0   # reused from the cache: no rate yet
    assert "time left not yet known" in progress_line(state)


def test_read_csvs_equals_reading_each_file(tmp_path):
    """The report's batched reader (one parse per distinct header) gives the rows pd.concat of
    per-file reads gives, in order, with mixed headers, a missing final newline and empty cells."""
    from flatbench.report.cells import read_csvs

    texts = ["a,b,c\n1,x,\n2,y,0.5\n", "a,b\n3,z", "a,b,c\n4,,1.5\n", "a,b\n5,w\n"]
    paths = []
    for i, t in enumerate(texts):
        paths.append(tmp_path / f"{i}.csv")
        paths[-1].write_text(t)
    got = pd.concat(read_csvs(paths), ignore_index=True).sort_values("a", ignore_index=True)
    want = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True).sort_values("a", ignore_index=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)   # the same values (pandas may type an all-empty column otherwise)


def test_heatmap_of_thousands_of_rows_keeps_every_row_unlabelled():
    import io

    import matplotlib.image as mpimg
    import numpy as np

    from flatbench.report.plots import MAX_LABELLED_ROWS, heatmap_png

    n = 3000
    table = pd.DataFrame({"t1": np.linspace(0, 100, n), "t2": 50.0}, index=pd.Index([f"cell {i}" for i in range(n)], name="x"))
    white = pd.DataFrame(False, index=table.index, columns=table.columns)
    white["t1"] = True
    img = mpimg.imread(io.BytesIO(heatmap_png(table, white, "asr")))
    assert img.shape[0] < 6000 and n > MAX_LABELLED_ROWS   # 40 inches at 110 dpi at most
    small = heatmap_png(table.head(5), white.head(5), "asr")
    assert len(small) > 5000


def test_plan_of_an_optuna_search_bounds_its_trials_by_the_corners(trained_zoo, zoo_dir, tmp_path):
    out = tmp_path / "p.csv"
    p = run(["flatbench", "plan", "-m", "experiment=digits_search", *SMALL, "--csv", str(out)], zoo_dir, tmp_path)
    corners = pd.read_csv(out)
    # beta in {0, 1} x zeta in {0.5, 6} x N in {4, 12, 16} (range(4, 20, 4): first, middle, last).
    assert len(corners) == 12 and sorted(set(corners["grad_evals"])) == [320, 640, 960, 1280, 1920, 2560]
    assert "an Optuna search" in p.stdout and "12 trials project to" in p.stdout and "not trials" in p.stdout


def test_plan_fails_with_one_line_naming_the_key(zoo_dir, tmp_path):
    import os

    env = dict(os.environ, **zoo_env(zoo_dir))
    for args, expect in ((["method=pgnn"], "pgnn"), (["method=pgn", "estimator.beta=-1"], "estimator.beta=-1 is out of range"),
                         (["--bogus"], "unknown option '--bogus'"),
                         # a key the group does not have: one line as on the main command, never Hydra's '+' advice
                         (["method=mifgsm", "estimator.n_samples=2"], "unknown key 'estimator.n_samples'")):
        p = command(["flatbench", "plan", *args, *SMALL], cwd=tmp_path, env=env, timeout=300)
        lines = p.stderr.strip().splitlines()
        assert p.returncode in (1, 2) and len(lines) == 1 and expect in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_compose_inside_a_hydra_app_leaves_the_apps_global_hydra():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from flatbench.entry.compose import CONFIG_DIR, compose

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        app = GlobalHydra.instance().hydra
        assert compose(["method=pgn"]).estimator.name == "pgn"
        assert GlobalHydra.instance().hydra is app


def test_progress_line_counts_the_time_besides_crafting_per_cell():
    """Regression: a finished cell's whole time was charged to its crafting evaluations, so a cheap
    cell whose flatness took a minute made every costly cell left look 100 times longer ("about 4.7 min
    left" with one minute left). Crafting is projected at its own seconds per evaluation, and the time
    besides crafting (evaluation, flatness) at its own mean per cell. Broken variant tried: the old
    formula (6,100 s here)."""
    from flatbench.entry.sweep_progress import progress_line

    state = {"total": 2, "cells": {"cheap": 10, "costly": 1000},
             "done": {"cheap": {"ok": True, "seconds": 61.0, "grad_evals": 10, "craft_seconds": 1.0}}}
    # costly: 1,000 evaluations at 0.1 s each, plus the 60 s the finished cell spent besides crafting.
    line = progress_line(state)
    assert "about 2.7 min of cell time left" in line and "mean 60 s per cell besides crafting" in line, line
