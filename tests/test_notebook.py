"""docs/notebooks/quickstart.ipynb runs from top to bottom (scripts/notebook.py executes it as the
documentation is built), its table equals the command line's cells for the same settings, and the
site's page of it is the notebook's current output."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from helpers import run

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "notebooks" / "quickstart.ipynb"


def _table(nb: dict) -> dict:
    """(attack, target) -> ASR from the notebook's table output."""
    md = next(o["data"]["text/markdown"] for c in nb["cells"] if c["cell_type"] == "code"
              for o in c["outputs"] if "text/markdown" in o.get("data", {}))
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    head = [h.strip() for h in lines[0].strip("|").split("|")]
    return {(cells[0], head[j]): float(cells[j]) for ln in lines[2:]
            for cells in [[c.strip() for c in ln.strip("|").split("|")]] for j in range(1, len(head))}


def test_the_quickstart_notebook_reproduces_the_command_lines_table(tmp_path):
    """Broken variant tried: the notebook crafting with seed=1 (PGN's column then differs from the cells')."""
    out_nb, out_md = tmp_path / "nb.ipynb", tmp_path / "quickstart.md"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "notebook.py"), str(NOTEBOOK), "--out", str(out_nb),
                        "--md", str(out_md)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    nb = json.loads(out_nb.read_text())
    assert all(c["execution_count"] for c in nb["cells"] if c["cell_type"] == "code")
    assert any("image/png" in o.get("data", {}) for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    table = _table(nb)
    sweep = tmp_path / "cli"
    run(["flatbench", "-m", "method=mifgsm,pgn", "surrogate=digits-cnn", "n_images=64", "seed=0", "progress=false",
         f"hydra.sweep.dir={sweep}"], None, tmp_path)
    cli = pd.concat([pd.read_csv(f) for f in sweep.glob("*/results.csv")])
    for r in cli.itertuples():
        assert table[(r.attack, r.target)] == round(r.asr, 1), (r.attack, r.target)
    for attack, g in cli[cli["role"] == "black-box"].groupby("attack"):
        assert table[(attack, "black-box mean")] == round(g["asr"].mean(), 1)
    # The site's page is this notebook's output (figures aside, which differ by matplotlib version).
    text = re.sub(r"!\[figure \d+\]\([^)]*\)", "", out_md.read_text())
    shipped = re.sub(r"!\[figure \d+\]\([^)]*\)", "", (NOTEBOOK.with_suffix(".md")).read_text())
    assert text == shipped, "docs/notebooks/quickstart.md is stale: python scripts/notebook.py " \
                            "docs/notebooks/quickstart.ipynb --md docs/notebooks/quickstart.md"
