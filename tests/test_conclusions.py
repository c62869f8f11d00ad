"""Sound conclusions (issue 34): flatness against transfer within each surrogate and per image,
every attack against a baseline with Holm's adjustment, and seeds summarised, each checked against
SciPy / scikit-learn recomputed from the cells' own CSVs."""
import math
import random
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, permutation_test, spearmanr
from sklearn.metrics import roc_auc_score


from flatbench.measures.statistics import auroc, auroc_interval, holm, mcnemar, spearman_test
from helpers import run


def holm_reference(p):
    """Holm's adjusted p-values written out from the definition: for the i-th smallest,
    max over j <= i of min(1, (m - j + 1) * p_(j))."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    for i in range(m):
        adj[order[i]] = max(min(1.0, (m - j) * p[order[j]]) for j in range(i + 1))
    return adj


# ---------------------------------------------------------------- the statistics alone

def test_holm_on_a_textbook_family_and_the_definition():
    # Holm (1979) style example: four p-values, alpha 0.05: only the smallest two are rejected.
    got = holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = random.Random(0)
    for _ in range(50):
        p = [rng.random() ** 3 for _ in range(rng.randint(1, 12))]
        assert holm(p) == pytest.approx(list(holm_reference(np.array(p))))


def _exact_spearman_reference(x, y):
    from scipy.stats import permutation_test, rankdata

    rx, ry = rankdata(x), rankdata(y)

    def rho(a, axis=-1):
        a, b = a - a.mean(axis=axis, keepdims=True), rx - rx.mean()
        return (a * b).sum(axis=axis) / np.sqrt((a * a).sum(axis=axis) * (b * b).sum())

    return permutation_test((ry,), rho, permutation_type="pairings", n_resamples=np.inf, vectorized=True).pvalue


def test_small_n_spearman_is_exact_never_zero_and_holm_adjusted_over_the_report():
    """At n = 3 a perfect ρ = −1 has exact p 1/3 (was 0 from the t approximation); at n = 9 the exact
    p of the CNN's sharp_worst (+0.85) is SciPy's permutation p, and the report's p_holm adjusts over the
    metrics × surrogates. Broken variant tried: the t approximation kept for n <= 10 (p = 0 at n = 3)."""
    from flatbench.report.flatness_tables import flatness_correlation

    t = spearman_test([1, 2, 3], [3, 2, 1])
    assert t["rho"] == -1.0 and t["p"] == pytest.approx(1 / 3) and math.isnan(t["ci_low"])
    rng = np.random.default_rng(5)
    cells = pd.DataFrame({"surrogate": ["a"] * 9 + ["b"] * 9, "asr": rng.random(18),
                          "m1": rng.random(18), "m2": rng.random(18)})
    cells.loc[:8, "m1"] = cells.loc[:8, "asr"] + rng.normal(0, 0.1, 9)
    corr = flatness_correlation(cells, ["m1", "m2"])
    fam = corr[corr["surrogate"] != "all"]
    assert len(fam) == 4 and corr[corr["surrogate"] == "all"]["p_holm"].isna().all()
    assert fam["p_holm"].tolist() == pytest.approx(holm(fam["p"].tolist()))
    first = fam.iloc[0]
    assert first["p"] == pytest.approx(_exact_spearman_reference(cells.loc[:8, "m1"], cells.loc[:8, "asr"]), rel=1e-9)
    assert first["p"] > 0 and first["method"].startswith("exact")


def test_spearman_auroc_and_mcnemar_equal_scipy_and_sklearn():
    rng = np.random.default_rng(1)
    for n in (4, 5, 8, 16, 40):
        x = rng.integers(0, 6, n).astype(float)          # ties on purpose
        y = x + rng.normal(0, 2, n)
        t = spearman_test(x, y)
        ref = spearmanr(x, y)
        assert t["rho"] == pytest.approx(ref.statistic, abs=1e-12)
        if n <= 10:   # exact, over every pairing: SciPy's permutation test; no interval at so few points
            assert t["p"] == pytest.approx(_exact_spearman_reference(x, y), rel=1e-9)
            assert math.isnan(t["ci_low"]) and math.isnan(t["ci_high"])
        else:
            assert t["p"] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
            assert t["ci_low"] <= t["rho"] <= t["ci_high"]
    assert math.isnan(spearman_test([1, 2], [2, 1])["rho"])
    for n in (10, 57, 300):
        s = rng.integers(0, 7, n).astype(float)
        lab = rng.random(n) < 0.4
        assert auroc(s, lab) == pytest.approx(roc_auc_score(lab, s), abs=1e-12)
        lo, hi = auroc_interval(s, lab, n_boot=200)
        assert lo <= roc_auc_score(lab, s) <= hi
        assert auroc_interval(s, lab, n_boot=200) == (lo, hi)   # a fixed seed
    assert math.isnan(auroc([1, 2, 3], [1, 1, 1]))
    for b, c in ((0, 0), (3, 9), (17, 4), (40, 41)):
        want = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
        assert mcnemar(b, c)["p_exact"] == pytest.approx(want, rel=1e-12)


def test_partial_spearman_equals_the_one_covariate_formula_and_removes_a_confounder():
    from flatbench.measures.statistics import partial_spearman
    rng = np.random.default_rng(5)
    z = rng.normal(size=300)
    x, y = z + rng.normal(size=300), z + rng.normal(size=300)    # related only through z
    a, b, c = spearmanr(x, y)[0], spearmanr(x, z)[0], spearmanr(y, z)[0]
    t = partial_spearman(x, y, [z])
    assert t["rho"] == pytest.approx((a - b * c) / math.sqrt((1 - b * b) * (1 - c * c)), abs=1e-12)
    assert a > 0.3 and t["ci_low"] < 0 < t["ci_high"] and t["p"] > 0.01
    assert math.isnan(partial_spearman([1, 2, 3, 4], [2, 1, 4, 3], [[1, 1, 2, 2]])["rho"])   # n - 3 - k < 1


# ---------------------------------------------------------------- the report, from the command line

FLAT = ["flatness=on", "flatness.k_samples=4", "flatness.power_iters=3", "flatness.landscape_images=0"]
COMMON = ["n_images=24", "eps=24", "targets=digits_small", "progress=false", "surrogate=digits-cnn,digits-mlp", "seed=0,1", *FLAT]


@pytest.fixture(scope="module")
def study(tmp_path_factory, zoo_dir):
    """12 cells (I-FGSM, DIM, PGN x two surrogates x two seeds; DIM's random resizes make the seeds
    differ) and 4 of GNP with the mean-|g|
    look-ahead (the hybrid that descends: a difference from I-FGSM that McNemar must find)."""
    tmp = tmp_path_factory.mktemp("conclusions")
    a, b = tmp / "family", tmp / "hybrid"
    run(["flatbench", "-m", "method=ifgsm,dim,pgn", *COMMON, f"hydra.sweep.dir={a}", f"paths.cache_dir={tmp / 'c'}"],
        zoo_dir, tmp)
    run(["flatbench", "-m", "method=gnp", "estimator.normalize=mean_abs", *COMMON, f"hydra.sweep.dir={b}",
         f"paths.cache_dir={tmp / 'c'}"], zoo_dir, tmp)
    out = tmp / "report"
    p = run(["flatbench-report", str(a), str(b), "--out", str(out), "--flatness", "sharp_mean", "--versus", "I-FGSM",
             "--over", "seed"], zoo_dir, tmp)
    ids = {"cell_id": str}
    rows = pd.concat(pd.read_csv(f, dtype=ids) for d in (a, b) for f in sorted(d.glob("*/results.csv")))
    preds = pd.concat(pd.read_csv(f, dtype=ids) for d in (a, b) for f in sorted(d.glob("*/predictions.csv")))
    flat = pd.concat(pd.read_csv(f).assign(cell_id=pd.read_csv(f.parent / "results.csv", dtype=ids)["cell_id"].iloc[0])
                     for d in (a, b) for f in sorted(d.glob("*/flatness.csv")))
    return {"out": out, "rows": rows, "preds": preds, "flat": flat, "stdout": p.stdout}


@pytest.mark.long   # uses the three-seed study fixture (117 s to set up)
def test_flatness_correlation_is_per_surrogate_and_equals_scipy(study):
    """Within each surrogate, over settings: with --over seed each setting's cells are averaged over
    the seeds first (two seeds of one method are not two points; counting them so gave 8 points per
    surrogate here, and p-values too small), then Spearman's ρ as SciPy computes it, p exact at so few points."""
    corr = pd.read_csv(study["out"] / "flatness_correlation.csv")
    rows = study["rows"]
    bb = rows[rows["role"] == "black-box"]
    cells = bb.groupby("cell_id").agg(surrogate=("surrogate", "first"), attack=("attack", "first"), asr=("asr", "mean"),
                                      **{m: (f"flat_{m}_median", "first") for m in ("sharp_mean", "sharp_worst")})
    points = cells.groupby(["surrogate", "attack"], as_index=False).mean(numeric_only=True)   # over the two seeds
    assert set(corr["surrogate"]) == {"digits-cnn", "digits-mlp", "all"}
    for m in ("sharp_mean", "sharp_worst"):
        for sur, g in list(points.groupby("surrogate")) + [("all", points)]:
            r = corr[(corr["surrogate"] == sur) & (corr["metric"] == m)].iloc[0]
            ref = spearmanr(g[m], g["asr"])
            assert r["n_cells"] == len(g) == (4 if sur != "all" else 8)
            assert r["rho"] == pytest.approx(ref.statistic, abs=1e-9), (sur, m)
            # at 4 and 8 points p is exact over every pairing (SciPy's permutation test), with no interval
            assert r["p"] == pytest.approx(_exact_spearman_reference(g[m], g["asr"]), rel=1e-6), (sur, m)
            assert math.isnan(r["ci_low"]) and r["method"].startswith("exact"), (sur, m)
    md = (study["out"] / "flatness.md").read_text()
    assert "per surrogate" in md and "pooled: not a finding" in md and "averaged over seed" in md


@pytest.mark.long   # uses the three-seed study fixture (117 s to set up)
def test_flatness_auroc_per_cell_equals_sklearn(study):
    au = pd.read_csv(study["out"] / "flatness_auroc.csv", dtype={"cell_id": str})
    preds, flat, rows = study["preds"], study["flat"], study["rows"]
    roles = rows.drop_duplicates(["cell_id", "target"]).set_index(["cell_id", "target"])["role"]
    checked = 0
    for cid in rows["cell_id"].unique():
        pr = preds[preds["cell_id"] == cid]
        pr = pr[[roles[(cid, t)] == "black-box" for t in pr["target"]]]
        share = pr.groupby("image_id")["fooled"].mean()
        fl = flat[(flat["cell_id"] == cid) & (flat["at"] == "adv")].set_index("image_id")
        transferred = (share.reindex(fl.index) >= 0.5).to_numpy()
        for m in ("sharp_mean", "hess_top", "loss"):
            r = au[(au["cell_id"] == cid) & (au["metric"] == m)].iloc[0]
            assert r["n_images"] == 24 and r["n_transferred"] == transferred.sum()
            if transferred.all() or not transferred.any():
                assert pd.isna(r["auroc"]) and pd.isna(r["ci_low"])
                continue
            assert r["auroc"] == pytest.approx(roc_auc_score(transferred, fl[m].to_numpy()), abs=1e-12)
            assert r["ci_low"] <= r["auroc"] <= r["ci_high"]
            checked += 1
    assert checked > 10
    # flatness.md's per-image summary counts a deterministic method's two seeds (I-FGSM, the hybrid GNP:
    # the same examples) once: 2 + 2 x 2 (DIM, PGN) = 6 cells per surrogate
    md = (study["out"] / "flatness.md").read_text()
    section = md.split("every metric: distinct cells", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| digits-")]
    assert rows and all(ln.split("|")[3].strip() == "6" for ln in rows), rows


def _signature(rows, cid):
    return rows.loc[rows["cell_id"] == cid, "adv_digest"].iloc[0]


@pytest.mark.long   # uses the three-seed study fixture (117 s to set up)
def test_every_attack_against_the_baseline_is_one_family_over_seeds(study):
    """One row per (attack, surrogate, target) over both seeds, a deterministic pair counted once;
    white-box rows out of the family; a black-box mean row with the exact sign-flip test; Holm over
    the family; each row's mde the smallest difference with 80% power at 0.05 over the family's size."""
    from flatbench.report.paired import mcnemar_power
    sig = pd.read_csv(study["out"] / "significance.csv")
    preds, rows = study["preds"], study["rows"]
    roles = rows.drop_duplicates(["cell_id", "target"]).set_index(["cell_id", "target"])["role"]
    assert set(sig["versus"]) == {"I-FGSM"} and "I-FGSM" not in set(sig["attack"])
    # DIM, PGN and the hybrid GNP x 2 surrogates, each on two targets and the black-box mean
    assert len(sig) == 3 * 2 * 3 and sig["family"].sum() == 3 * 2 * 2
    cells = rows.drop_duplicates("cell_id")
    m = int(sig["family"].sum())
    for r in sig.itertuples():
        ids, vids = r.cell_ids.split(), r.versus_cell_ids.split()
        assert len(ids) == len(vids) == 2 and cells.set_index("cell_id").loc[ids + vids, "surrogate"].nunique() == 1
        keys = [(_signature(rows, a), _signature(rows, b)) for a, b in zip(ids, vids)]
        counted = [i for i in range(2) if keys[i] not in keys[:i]]
        assert r.seeds_counted == " ".join(str(cells.set_index("cell_id").loc[ids[i], "seed"]) for i in counted)
        if r.target != "black-box mean":
            assert r.family == (roles[(ids[0], r.target)] == "black-box")
            only_a = only_b = n = 0
            for i in counted:
                a = preds[(preds["cell_id"] == ids[i]) & (preds["target"] == r.target)].set_index("image_id")["fooled"]
                b = preds[(preds["cell_id"] == vids[i]) & (preds["target"] == r.target)].set_index("image_id")["fooled"]
                only_a += int(((a == 1) & (b == 0)).sum())
                only_b += int(((a == 0) & (b == 1)).sum())
                n += len(a)
            assert (r.only_attack, r.only_versus, r.n) == (only_a, only_b, n)
            want = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
            assert r.p == pytest.approx(want, rel=1e-9)
            level = 0.05 / m if r.family else 0.05
            assert r.level == pytest.approx(level)
            if not math.isnan(r.mde):
                q = (only_a + only_b) / n
                assert mcnemar_power(n, q, r.mde / 100, level) >= 0.8 > mcnemar_power(n, q, r.mde / 100 - 0.002, level)
        else:
            assert r.family
            share = []
            for i in counted:
                pr = preds[preds["cell_id"].isin([ids[i], vids[i]])]
                pr = pr[[roles[(ids[i], t)] == "black-box" for t in pr["target"]]]
                per = pr.pivot_table(index="image_id", columns="cell_id", values="fooled", aggfunc="mean")
                share.append(per[ids[i]] - per[vids[i]])
            d = sum(share) / len(share)
            assert r.n == len(d) and r.diff == pytest.approx(100 * d.mean())
            assert r.diff_ci_low <= r.diff <= r.diff_ci_high
            ref = permutation_test((d.to_numpy(),), np.mean, permutation_type="samples", n_resamples=20000,
                                   random_state=0).pvalue
            assert r.p == pytest.approx(ref, abs=0.02)
    # the deterministic hybrid GNP against deterministic I-FGSM: both seeds give the same pair, counted once
    assert set(sig[sig["attack"].str.startswith("GNP")]["seeds_counted"]) == {"0"}
    assert set(sig[sig["attack"] == "PGN"]["seeds_counted"]) == {"0 1"}
    fam = sig[sig["family"]]
    assert fam["p_holm"].to_numpy() == pytest.approx(holm_reference(fam["p"].to_numpy()))
    assert sig[~sig["family"]]["p_holm"].isna().all()
    # The hybrid GNP descends: far below I-FGSM on the white-box target (a row judged alone).
    white = sig[~sig["family"] & sig["attack"].str.startswith("GNP")]
    assert (white["p"] < 0.05).all() and set(white["verdict"]) == {"lower"}
    quiet = fam[fam["p_holm"] >= 0.05]
    assert all(v.startswith("no detectable difference (") for v in quiet["verdict"])
    # the per-seed table marks each seed's entry of a row that differs; the mean table, the row once
    hits = fam[fam["p_holm"] < 0.05]
    per_seed = [ln for ln in (study["out"] / "table_seeds.md").read_text().splitlines() if ln.startswith("| digits-")]
    pooled = [ln for ln in (study["out"] / "table.md").read_text().splitlines() if ln.startswith("| digits-")]
    assert sum(ln.count("†") for ln in per_seed) == 2 * len(hits)
    assert sum(ln.count("†") for ln in pooled) == len(hits)
    md = (study["out"] / "significance.md").read_text()
    assert f"{m} tests in the family" in md
    every = md.split("## 3. Every row", 1)[1]
    assert every.count("no detectable difference (") == sig["verdict"].str.startswith("no detectable difference (").sum()
    survive = md.split("## 1. Differences that survive", 1)[1].split("## 2.", 1)[0]
    assert sum(ln.startswith("| ") for ln in survive.splitlines()) - 1 == len(hits)   # the header and its rows


@pytest.mark.long   # uses the three-seed study fixture (117 s to set up)
def test_seeds_summarised_with_the_sample_sd(study):
    summ = pd.read_csv(study["out"] / "summary.csv")
    rows = study["rows"]
    assert (summ["n_seeds"] == 2).all() and "seed" not in summ.columns
    assert len(summ) == 8 * 2   # (I-FGSM, DIM, PGN, hybrid GNP) x 2 surrogates, x 2 targets
    for r in summ.itertuples():
        g = rows[(rows["attack"] == r.attack) & (rows["surrogate"] == r.surrogate) & (rows["target"] == r.target)
                 & (rows["normalize"].fillna("-") == (r.normalize if isinstance(r.normalize, str) else "-"))]
        assert sorted(g["seed"]) == [0, 1]
        assert r.asr_mean == pytest.approx(np.mean(g["asr"]))
        assert r.asr_sd == pytest.approx(np.std(g["asr"], ddof=1))
    assert (summ["asr_sd"] > 0).any()   # DIM's draws differ between seeds
    dim = rows[(rows["attack"] == "MI-FGSM+DIM") & (rows["surrogate"] == "digits-cnn") & (rows["target"] == "digits-mlp")]
    table = (study["out"] / "table.md").read_text()
    line = next(ln for ln in table.splitlines() if "| digits-cnn | MI-FGSM+DIM |" in ln)
    assert re.search(rf"{np.mean(dim['asr']):.1f} ± {np.std(dim['asr'], ddof=1):.1f} \(2\)", line), line
    assert "mean ± sample standard deviation over seed" in table
