"""The README's default table is what the default experiment prints: a fresh run of a handful
of its cells, with the pinned weights, gives the README's numbers."""

import pandas as pd
import pytest

from conftest import ROOT
from test_run import run

CELLS = ["ifgsm", "mifgsm", "gnp", "gnp_ta"]  # the cheap rows of the digits-cnn half of the table
TOLERANCE = 1.0  # points; see the README ("The default experiment and its table")

def readme_table() -> pd.DataFrame:
    text = (ROOT / "README.md").read_text()
    block = text.split("## The default experiment and its table", 1)[1].split("###", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip().rstrip("*") for c in ln.strip("|").split("|")] for ln in lines[1:]]
    return pd.DataFrame(rows, columns=head)

def test_readme_table_is_what_a_fresh_run_prints(zoo_dir, tmp_path):
    if zoo_dir is not None:
        pytest.skip("FLATBENCH_ZOO selects trained weights; the README's table is the pinned weights'")
    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", "experiment=digits", "surrogate=digits-cnn", f"method={','.join(CELLS)}", "progress=false",
         f"hydra.sweep.dir={sweep}"], None, tmp_path)
    ours = pd.concat(pd.read_csv(f) for f in sweep.glob("*/results.csv"))
    want = readme_table()
    want = want[want["surrogate"] == "digits-cnn"].set_index("attack")
    compared = 0
    for r in ours.itertuples():
        published = float(want.loc[r.attack, r.target])
        assert abs(r.asr - published) <= TOLERANCE, (r.attack, r.target, r.asr, published)
        compared += 1
    assert compared == len(CELLS) * 6
    bb = ours[ours["role"] != "white-box"].groupby("attack")["asr"].mean()
    for attack, v in bb.items():
        assert abs(v - float(want.loc[attack, "black-box mean"])) <= TOLERANCE
