"""--versus keeps apart the settings of one attack: two PGN radii are two rows, never pooled as if
they were seeds of one setting (regression: they were, and the pooled verdict marked both)."""
import pandas as pd

from helpers import report_main, run


def test_versus_keeps_two_settings_of_one_attack_apart(tmp_path, capsys):
    common = ["surrogate=digits-cnn", "targets=digits_small", "n_images=16", "steps=3", "progress=false"]
    run(["flatbench", "-m", *common, "method=mifgsm", f"hydra.sweep.dir={tmp_path / 'mi'}"], None, tmp_path)
    run(["flatbench", "-m", *common, "method=pgn", "estimator.zeta=1,4", f"hydra.sweep.dir={tmp_path / 'pgn'}"],
        None, tmp_path)
    rc, err = report_main([tmp_path / "mi", tmp_path / "pgn", "--versus", "MI-FGSM", "--out", tmp_path / "r"], capsys)
    assert rc == 0, err
    sig = pd.read_csv(tmp_path / "r" / "significance.csv")
    mean = sig[(sig["attack"] == "PGN") & (sig["target"] == "black-box mean")]
    assert sorted(mean["attack_settings"]) == ["zeta=1", "zeta=4"] and (mean["seeds"].astype(str) == "0").all()
    assert (mean["n"] == 16).all() and len(set(mean["cell_ids"])) == 2
    raw = pd.read_csv(tmp_path / "r" / "results.csv")
    for r in mean.itertuples():   # each row's ASR is its own cell's, recomputed
        cell = raw[(raw["cell_id"].astype(str) == str(r.cell_ids)) & (raw["role"] == "black-box")]
        assert abs(cell["asr"].mean() - r.asr) < 1e-9
    assert "PGN (zeta=1)" in (tmp_path / "r" / "significance.md").read_text()


def test_versus_a_surrogate_pairs_each_run_with_the_base_per_image(tmp_path, capsys):
    """``--versus surrogate=digits-resnet``: every other surrogate against the base, the same attack and
    settings on the same images; the collection runs of one LGV set are one row, their image pairs
    summed (seeds ``1/0 2/0``: run/seed). The discordant counts recompute from the per-image outcomes.
    Broken variant tried: each run's table made into rows on its own (two rows per target, seeds
    ``1/0`` and ``2/0``)."""
    common = ["targets=digits", "n_images=12", "steps=3", "progress=false", "method=mifgsm"]
    run(["flatbench", "-m", *common, "surrogate=digits-resnet,digits-resnet-lgv,digits-resnet-lgv-2",
         f"hydra.sweep.dir={tmp_path / 's'}"], None, tmp_path)
    rc, err = report_main([tmp_path / "s", "--versus", "surrogate=digits-resnet", "--out", tmp_path / "r"], capsys)
    assert rc == 0, err
    sig = pd.read_csv(tmp_path / "r" / "significance.csv")
    assert set(sig["surrogate"]) == {"digits-resnet-lgv"} and set(sig["attack"]) == {"MI-FGSM"}
    assert (sig["versus"] == "surrogate=digits-resnet").all() and (sig["seeds"] == "1/0 2/0").all()
    raw = pd.read_csv(tmp_path / "r" / "results.csv")
    ids = {s: raw.loc[raw["surrogate"] == s, "cell_id"].astype(str).iloc[0]
           for s in ("digits-resnet", "digits-resnet-lgv", "digits-resnet-lgv-2")}
    flags = pd.concat([pd.read_csv(f) for f in (tmp_path / "s").glob("*/predictions.csv")])
    flags["cell_id"] = flags["cell_id"].astype(str)
    for r in sig[sig["target"] != "black-box mean"].itertuples():
        assert r.n == 24
        only_lgv = only_base = 0
        for run_name in ("digits-resnet-lgv", "digits-resnet-lgv-2"):
            m = flags[(flags["cell_id"] == ids[run_name]) & (flags["target"] == r.target)].merge(
                flags[(flags["cell_id"] == ids["digits-resnet"]) & (flags["target"] == r.target)], on="image_id")
            only_lgv += int(((m["fooled_x"] == 1) & (m["fooled_y"] == 0)).sum())
            only_base += int(((m["fooled_x"] == 0) & (m["fooled_y"] == 1)).sum())
        assert (r.only_attack, r.only_versus) == (only_lgv, only_base), r.target
    base_row = sig[sig["target"] == "digits-resnet"]   # the base is white-box for its LGV sets
    assert len(base_row) == 1 and not base_row["family"].iloc[0] and len(sig) == 7
    md = (tmp_path / "r" / "significance.md").read_text()
    assert "Every surrogate against digits-resnet" in md
    rc, err = report_main([tmp_path / "s", "--versus", "surrogate=digits-cnn", "--out", tmp_path / "r2"], capsys)
    assert rc != 0 and "surrogate=digits-cnn" in err and "digits-resnet-lgv-2" in err
