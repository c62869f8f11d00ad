"""The Python API a notebook uses (load_dataset, create_attack, craft_set, evaluate_transfer) gives
the command line's numbers for the same settings: the same 8-bit images and the same results.csv
rows, for a deterministic attack and for a sampling one (PGN, whose draws are keyed by the seed and
each batch's first index).

The command line pins the CPU kernel paths in its own process (flatbench/core/kernels.py); the API never
changes the process it runs in. So the command line here runs with FLATBENCH_KERNELS=native, the
kernels this test process has (a notebook gets the pinned paths by exporting the three variables
before Python starts)."""
import pandas as pd
import pytest
import torch

import flatbench
from flatbench.core.registry import ConfigError
from flatbench.cell.store import load_adv
from helpers import run

COLUMNS = ["clean_acc", "asr", "asr_ci_low", "asr_ci_high", "n_fooled", "n_clean_correct", "n_fooled_clean_correct"]


@pytest.mark.parametrize("method", ["mifgsm", "pgn"])
def test_the_api_gives_the_command_lines_images_and_rows(method, tmp_path):
    """70 images: two batches of 64 and 6, so a batch's key matters. Broken variant tried: crafting the
    whole set in one call of the attack (PGN's draws then differ from the cell's; MI-FGSM still equal)."""
    out = tmp_path / "cli"
    run(["flatbench", f"method={method}", "surrogate=digits-cnn", "targets=digits_small", "n_images=70", "steps=3",
         "seed=4", "progress=false", f"hydra.run.dir={out}"], None, tmp_path, extra_env={"FLATBENCH_KERNELS": "native"})
    data = flatbench.load_dataset("digits", n_images=70)
    attack = flatbench.create_attack(method, flatbench.load_model("digits-cnn"), eps=32 / 255, steps=3)
    adv = flatbench.craft_set(attack, data, seed=4, progress=False)
    stored, ids = load_adv(out / "adv.safetensors")
    assert ids == list(data.ids) and torch.equal(adv, stored)
    rows = flatbench.evaluate_transfer(adv, data, "digits_small", surrogate="digits-cnn", progress=False)
    cli = pd.read_csv(out / "results.csv").set_index("target")
    assert list(rows["target"]) == list(cli.index)
    for r in rows.itertuples():
        assert r.role == cli.at[r.target, "role"] and r.target_model == cli.at[r.target, "target_model"]
        for c in COLUMNS:
            assert getattr(r, c) == pytest.approx(cli.at[r.target, c], abs=1e-9), (r.target, c)


def test_the_api_names_what_is_wrong():
    with pytest.raises(ConfigError, match=r"data='digitz' is not a known name; valid: .*digits"):
        flatbench.load_dataset("digitz")
    with pytest.raises(ConfigError, match=r"targets='digit' is not a known name; valid: .*digits_small"):
        flatbench.load_zoo("digit")
    with pytest.raises(ConfigError, match="n_images"):
        flatbench.load_dataset("digits", n_images=100000)
    assert flatbench.load_zoo({"cnn": {"model": "digits-cnn"}}) == {"cnn": {"model": "digits-cnn", "role": "normal"}}
    data = flatbench.load_dataset("digits", n_images=4, split="train")
    assert len(data) == 4 and data.ids != flatbench.load_dataset("digits", n_images=4).ids
    with pytest.raises(ValueError, match="adversarial images for a data set"):
        flatbench.evaluate_transfer(data.images[:2], data, "digits_small", progress=False)


def test_the_api_pages_first_example_runs_as_written(capsys):
    """docs/api.md's first code block, executed as it stands: it prints one row per target of the zoo."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    exec(compile(code, "docs/api.md", "exec"), {})
    out = capsys.readouterr().out
    assert all(t in out for t in ("digits-mlp", "digits-mixer", "white-box", "black-box")), out
