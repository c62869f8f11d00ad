"""The small edges a newcomer meets in the first hour: a wrong word for `flatbench list` gets the right
one, and every listed description ends where its sentence ends."""
import re

import pytest

import flatbench
from flatbench.entry.listing import main as list_main


def test_a_wrong_kind_for_list_names_the_right_one(capsys):
    """`flatbench list method` printed the usage and nothing else (regression)."""
    assert list_main(["method"]) == 2
    err = capsys.readouterr().err
    assert "flatbench list: no kind 'method'. Did you mean 'methods'?" in err
    assert list_main(["zoo", "digits"]) == 2 and "Did you mean 'zoos'?" in capsys.readouterr().err
    assert list_main(["--help"]) == 0 and "flatbench list methods" in capsys.readouterr().out


@pytest.mark.parametrize("lister", ["list_experiments", "list_zoos", "list_data"])
def test_descriptions_end_where_the_sentence_ends(lister):
    """A description is the first sentence of the config's leading comment, never a line cut off mid-
    sentence (regression: 'An Optuna search over PGN's beta, zeta and N ... on the digits testbed, for the')."""
    rows = getattr(flatbench, lister)()
    assert rows
    for r in rows:
        d = r["description"]
        assert d and re.search(r"[.)!?:]$", d), (r["name"], d)
        assert not re.search(r"\b(the|a|an|and|of|for|on|with|to|in)$", d), (r["name"], d)
    if lister == "list_experiments":
        search = next(r["description"] for r in rows if r["name"] == "digits_search")
        assert search.startswith("An Optuna search over PGN's beta, zeta and N") and search.endswith(".")


def test_a_rerun_of_another_cell_moves_the_stale_report_aside(tmp_path):
    """A report made of a run directory's old cell is not left beside the new cell's rows as if it were
    theirs (regression): it is moved to report.cell-<old id>, kept, and the log says so."""
    import json

    from helpers import SMALL, run

    out = tmp_path / "run"
    run(["flatbench", "method=ifgsm", "steps=2", *SMALL, f"hydra.run.dir={out}"], None, tmp_path)
    old = json.loads((out / "cell.json").read_text())["cell_id"]
    run(["flatbench-report", str(out)], None, tmp_path)
    assert (out / "report" / "table.md").exists()
    p = run(["flatbench", "method=mifgsm", "steps=2", *SMALL, f"hydra.run.dir={out}"], None, tmp_path)
    assert not (out / "report").exists()
    kept = out / f"report.cell-{old}"
    assert (kept / "table.md").exists() and "I-FGSM" in (kept / "table.md").read_text()
    assert f"report.cell-{old}" in p.stderr + p.stdout


def test_the_crafting_bar_moves_after_every_step(monkeypatch):
    """Regression: the bar moved once per batch, so PGN sat at 0/32 for 17 s. With 70 images (a batch of
    64 and one of 6) and T = 4, it now moves after the steps inside each batch and ends at the whole set."""
    import tqdm.auto

    seen, ends = [], []

    class Recording(tqdm.auto.tqdm):
        def update(self, n=1):
            seen.append(n)
            return super().update(n)

        def close(self):
            ends.append(self.n)
            return super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    data = flatbench.load_dataset("digits", n_images=70)
    attack = flatbench.create_attack("mifgsm", flatbench.load_model("digits-cnn"), eps=32 / 255, steps=4)
    adv = flatbench.craft_set(attack, data, batch_size=64, progress=True)
    assert len(adv) == 70
    # After steps 1, 2 and 3 of each batch a quarter of it; after the last, the batch is whole.
    assert seen == [16.0] * 3 + [1.5] * 3 and ends and set(ends) == {70}, (seen, ends)


def test_plan_fits_a_terminal_and_wide_shows_every_column(tmp_path):
    """Regression: `flatbench plan -m experiment=digits` printed a table about 260 columns wide that cut
    off its rate sources. The default table fits 100 columns, names each rate's source once below it,
    and --wide prints every column."""
    from helpers import run

    args = ["flatbench", "plan", "-m", "method=mifgsm,pgn", "surrogate=digits-cnn,digits-resnet", "n_images=8",
            "targets=digits_small"]
    out = run(args, None, tmp_path).stdout
    assert out and max(len(line) for line in out.splitlines()) <= 100, out
    assert re.search(r"^r1: (on file|measured now)", out, re.M) and "projected" in out and "eval_passes" not in out
    wide = run(args + ["--wide"], None, tmp_path).stdout
    assert "eval_passes" in wide and "rate_source" in wide


def test_help_text_is_plain_text():
    """Regression: `flatbench-report --help` showed raw roles (:mod:`.cells`) and module talk."""
    from helpers import command

    for cmd in (["flatbench-report", "--help"], ["flatbench", "list", "--help"], ["flatbench", "plan", "--help"],
                ["flatbench-zoo", "--help"]):
        out = command(cmd, timeout=120).stdout
        assert out and not re.search(r":(mod|class|func|meth|attr|data):`", out), (cmd, out)
        assert "This module" not in out, cmd


def test_the_config_reference_is_generated_and_current(tmp_path):
    """docs/reference.md is scripts/config_page.py's output: every top-level key of config.yaml, every
    group's options, every part's parameters with their defaults. Broken variant tried: a parameter
    added to a declaration without regenerating the page (--check exits 1)."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    check = subprocess.run([sys.executable, str(root / "scripts" / "config_page.py"), "--check"], capture_output=True,
                           text=True, timeout=300)
    assert check.returncode == 0, check.stderr
    page = (root / "docs" / "reference.md").read_text()
    top = yaml.safe_load((root / "flatbench" / "conf" / "config.yaml").read_text())
    assert all(f"| `{k}` |" in page for k in top if k not in ("defaults", "hydra"))
    from flatbench.attacks import ESTIMATORS

    pgn = ESTIMATORS.get("pgn")
    assert all(f"| `estimator.{p.name}` |" in page for p in pgn.params)
    assert "| `transforms.dim.prob` | `0.5` |" in page and "| `digits_defended` |" in page


def test_a_cell_shows_evaluation_progress(tmp_path):
    """The evaluation stage has a bar in images over the targets it evaluates (it had none: a zoo of
    ImageNet models sat silent), which ends whole."""
    from helpers import SMALL, run

    p = run(["flatbench", "method=ifgsm", "steps=2", *[a for a in SMALL if a != "progress=false"], "progress=true",
             f"hydra.run.dir={tmp_path / 'run'}"], None, tmp_path)
    bars = [ln for ln in p.stderr.replace("\r", "\n").splitlines() if ln.startswith("evaluate")]
    assert bars and "100%" in bars[-1] and "16/16" in bars[-1], bars[-3:]


def test_list_into_a_closed_pipe_ends_quietly(tmp_path):
    """Regression: `flatbench list zoos | head -3` could end in a BrokenPipeError traceback (exit 120)
    when head had stopped reading. Here the pipe has no reader at all, so every write fails."""
    import os
    import subprocess

    from helpers import BIN

    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([str(BIN / "flatbench"), "list", "zoos"], stdout=w, stderr=subprocess.PIPE, text=True,
                           timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 0 and "BrokenPipe" not in p.stderr and "Traceback" not in p.stderr, (p.returncode, p.stderr)
