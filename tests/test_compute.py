"""The report's compute axis (issue 33, part 4): compute.csv (one row per cell and step), compute.png
(ASR against gradient evaluations per image, the Pareto front marked) and --budget B (each attack's
best row within B evaluations per image), on a real sweep at two budgets through the command line."""
import pandas as pd
import pytest


from flatbench.report.compute import best_within, compute_table, pareto
from flatbench.measures.statistics import wilson
from helpers import SMALL, run


def _rows():
    """Two cells of one attack and one of another, each on a white-box and two black-box targets."""
    rows = []
    for cell, attack, seed, evals, fooled in (("a", "PGN", 0, 400, (30, 20)), ("b", "PGN", 1, 400, (40, 10)),
                                              ("c", "MI-FGSM", 0, 100, (50, 5))):
        for target, role, k in (("s", "white-box", 90), ("t1", "black-box", fooled[0]), ("t2", "black-box", fooled[1])):
            lo, hi = wilson(k, 100)
            rows.append(dict(cell_id=cell, attack=attack, surrogate="digits-cnn", eps=32, norm="linf", targeted=False,
                             seed=seed, steps=10, n_images=100, grad_evals=evals * 100, target=target, role=role,
                             asr=float(k), asr_ci_low=100 * lo, asr_ci_high=100 * hi))
    return pd.DataFrame(rows)


def test_compute_table_is_the_black_box_mean_at_the_cost_per_image():
    t = compute_table(_rows()).set_index("cell_id")
    assert t.loc["a", "asr"] == 25 and t.loc["c", "asr"] == 27.5 and (t["n_targets"] == 2).all()
    assert t.loc["a", "grad_evals_per_image"] == 400 and t.loc["c", "grad_evals_per_image"] == 100
    assert t.loc["a", "step"] == 10
    # the interval is the mean of the black-box targets' Wilson bounds (not the white-box one's)
    want = (100 * wilson(30, 100)[0] + 100 * wilson(20, 100)[0]) / 2
    assert t.loc["a", "asr_ci_low"] == pytest.approx(want)


def test_pareto_front_and_best_within_a_budget():
    pts = pd.DataFrame({"grad_evals_per_image": [10, 20, 40, 40], "asr": [50, 40, 60, 55]})
    assert list(pareto(pts)) == [True, False, True, False]
    best = best_within(compute_table(_rows()), 400).set_index("attack")
    assert best.loc["PGN", "asr"] == 25 and best.loc["PGN", "n_cells"] == 2   # the mean over its two seeds
    best = best_within(compute_table(_rows()), 399)
    assert list(best["attack"]) == ["MI-FGSM"]
    with pytest.raises(ValueError, match="cheapest spent 100"):
        best_within(compute_table(_rows()), 50)


def test_report_writes_the_compute_axis_and_the_budget_table(trained_zoo, zoo_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", "method=mifgsm,pgn", "budget=20,40", *SMALL, f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    p = run(["flatbench-report", str(sweep), "--budget", "20", "--versus", "MI-FGSM"], zoo_dir, tmp_path)
    comp = pd.read_csv(sweep / "report" / "compute.csv")
    assert len(comp) == 4 and set(comp["grad_evals_per_image"]) == {20, 40} and set(comp["budget"]) == {20, 40}
    assert {"attack", "surrogate", "grad_evals_per_image", "asr", "asr_ci_low", "asr_ci_high", "step"} <= set(comp.columns)
    rows = pd.read_csv(sweep / "report" / "results.csv")
    black = rows[rows["role"] != "white-box"].groupby("cell_id")["asr"].mean()
    assert comp.set_index("cell_id")["asr"].to_dict() == pytest.approx(black.to_dict())
    best = pd.read_csv(sweep / "report" / "budget_20.csv")
    assert set(best["attack"]) == {"MI-FGSM", "PGN"} and (best["grad_evals_per_image"] == 20).all()
    assert "within 20 gradient evaluations per image" in p.stdout
    # At a budget, cells pair by the budget (T and α are the knob's): PGN at 20 against MI-FGSM at 20.
    sig = pd.read_csv(sweep / "report" / "significance.csv", dtype={"cell_ids": str, "versus_cell_ids": str})
    cells = comp.set_index("cell_id")
    # two targets and the black-box mean, two budgets
    assert sorted(set(sig["budget"])) == [20, 40] and len(sig) == 3 * 2
    for r in sig.itertuples():
        assert cells.loc[r.cell_ids, "budget"] == cells.loc[r.versus_cell_ids, "budget"] == r.budget
    import matplotlib.image as mpimg
    img = mpimg.imread(sweep / "report" / "compute.png")
    assert img.shape[1] > 300 and img[..., :3].std() > 0.05
