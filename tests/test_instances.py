"""The testbed's independently trained instances: a cell per instance on its own instance's zoo, and
the report summarising over them (``--over instance``), through the command lines."""
import re

import pandas as pd
import pytest

from helpers import fails, report_main, run

ARGS = ["method=ifgsm,mifgsm", "n_images=16", "steps=3", "progress=false"]


@pytest.fixture(scope="module")
def replicates(tmp_path_factory):
    """digits-cnn's three instances, each attacking on its own instance's zoo (pinned weights)."""
    root = tmp_path_factory.mktemp("instances")
    for surrogate, zoo in (("digits-cnn", "digits"), ("digits-cnn-2", "digits_2"), ("digits-cnn-3", "digits_3")):
        run(["flatbench", "-m", f"surrogate={surrogate}", f"targets={zoo}", *ARGS,
             f"hydra.sweep.dir={root / surrogate}"], None, root)
    return root


def test_over_instance_is_mean_and_sd_over_the_three_instances(replicates, tmp_path, capsys):
    dirs = [replicates / n for n in ("digits-cnn", "digits-cnn-2", "digits-cnn-3")]
    rc, err = report_main([*dirs, "--over", "instance", "--versus", "I-FGSM", "--out", tmp_path], capsys)
    assert rc == 0, err
    raw = pd.read_csv(tmp_path / "results.csv")
    assert set(raw["surrogate"]) == {"digits-cnn", "digits-cnn-2", "digits-cnn-3"}   # the merged rows keep their names
    # Each instance's white-box column is its own surrogate, under the architecture's key.
    white = raw[raw["role"] == "white-box"]
    assert (white["target"] == "digits-cnn").all() and (white["target_model"] == white["surrogate"]).all()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(summary["surrogate"]) == {"digits-cnn"} and (summary["n_seeds"] == 3).all()
    assert len(summary) == 2 * 6
    for _, r in summary.iterrows():   # recomputed from the cells' own rows
        asr = raw[(raw["attack"] == r["attack"]) & (raw["target"] == r["target"])]["asr"]
        assert len(asr) == 3 and r["asr_mean"] == pytest.approx(asr.mean()) and r["asr_sd"] == pytest.approx(asr.std())
    assert "over instance" in (tmp_path / "table.md").read_text()
    sig = pd.read_csv(tmp_path / "significance.csv")
    assert set(sig["surrogate"]) == {"digits-cnn"} and set(sig["seeds"]) == {"1/0 2/0 3/0"}
    rows = sig[sig["target"] == "digits-mlp"]
    assert len(rows) == 1 and rows["n"].item() == 3 * 16   # the three instances' images pooled


def test_over_instance_refuses_a_cell_evaluated_on_another_instance(replicates, tmp_path, capsys):
    run(["flatbench", "surrogate=digits-cnn-2", "targets=digits", "method=ifgsm", "n_images=16", "steps=3",
         "progress=false", f"hydra.run.dir={tmp_path / 'mixed'}"], None, tmp_path)
    rc, err = report_main([replicates / "digits-cnn", tmp_path / "mixed", "--over", "instance", "--out", tmp_path / "r"],
                          capsys)
    assert rc == 2 and re.search(r"digits-cnn-2 \(instance 2\) were evaluated on digits-[a-z-]+ \(instance 1\)", err), err
    # Without --over instance, the same cells are a plain table: each surrogate its own row.
    rc, err = report_main([replicates / "digits-cnn", tmp_path / "mixed", "--out", tmp_path / "plain"], capsys)
    assert rc == 0, err


def test_an_instance_name_is_a_model_name_everywhere(tmp_path):
    out = run(["flatbench", "list", "models", "digits-cnn*"], None, tmp_path).stdout
    assert all(n in out for n in ("digits-cnn-2", "digits-cnn-3", "digits-cnn-bn-3"))
    assert "digits-cnn-4" in fails(["flatbench", "surrogate=digits-cnn-4", "n_images=4", "progress=false",
                                    f"hydra.run.dir={tmp_path / 'x'}"], tmp_path)
