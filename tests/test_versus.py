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
    assert sorted(mean["attack_settings"]) == ["zeta=1.0", "zeta=4.0"] and (mean["seeds"].astype(str) == "0").all()
    assert (mean["n"] == 16).all() and len(set(mean["cell_ids"])) == 2
    raw = pd.read_csv(tmp_path / "r" / "results.csv")
    for r in mean.itertuples():   # each row's ASR is its own cell's, recomputed
        cell = raw[(raw["cell_id"].astype(str) == str(r.cell_ids)) & (raw["role"] == "black-box")]
        assert abs(cell["asr"].mean() - r.asr) < 1e-9
    assert "PGN (zeta=1.0)" in (tmp_path / "r" / "significance.md").read_text()
