"""ASR along the attack (issue 33, part 3): ``snapshots=[2,5]`` keeps the examples after steps 2 and 5
as well, evaluates them on every target and writes their rows (``snapshots.csv``, a ``step`` column).
Snapshots are evaluation, not another attack: the last step's rows are what the cell gives without
them, and a rerun that asks for a step the store lacks crafts again only as far as that step."""
import pandas as pd
import pytest
import torch


from flatbench import create_attack
from flatbench.core.registry import ConfigError
from helpers import SMALL, run


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 5)).eval()


def test_trajectory_points_are_the_shorter_attacks_bit_for_bit():
    m, eps = _model(), 16 / 255
    x, y = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3])
    for method in ("mifgsm", "pgn"):
        a = create_attack(method, m, eps=eps, n_samples=2) if method == "pgn" else create_attack(method, m, eps=eps)
        tr = a.trajectory(x, y, at=(2, 5))
        assert sorted(tr) == [2, 5, 10]
        short = (create_attack(method, m, eps=eps, steps=5, alpha=eps / 10, **({"n_samples": 2} if method == "pgn" else {})))
        assert torch.equal(tr[5], short(x, y)), method
        assert torch.equal(tr[10], a(x, y)), method
        assert sorted(a.trajectory(x, y, at=(2, 5), until=5)) == [2, 5]
    for bad in ([0], [11], [2.5], ["x"]):
        with pytest.raises(ConfigError, match="snapshots"):
            create_attack("mifgsm", m, eps=eps).trajectory(x, y, at=bad)


def _cli(out, cache, *extra, zoo_dir=None, cwd=None):
    return run(["flatbench", "method=mifgsm", *SMALL, f"hydra.run.dir={out}", f"paths.cache_dir={cache}", *extra],
               zoo_dir, cwd)


MEASURED = ["cell_id", "target", "step", "asr", "n_fooled", "clean_acc", "linf_mean", "l2_mean", "psnr_mean",
            "ssim_mean", "grad_evals"]


@pytest.mark.long   # measured in the clean-clone .ci/run of d8240d2 (make test: 15 min 23 s of pytest there)
def test_snapshots_through_the_command_line(trained_zoo, zoo_dir, tmp_path):
    c1, c2 = tmp_path / "cache1", tmp_path / "cache2"
    _cli(tmp_path / "a", c1, zoo_dir=zoo_dir, cwd=tmp_path)                                 # no snapshots
    _cli(tmp_path / "b", c2, "snapshots=[2,5]", zoo_dir=zoo_dir, cwd=tmp_path)             # a fresh cache
    a, b = (pd.read_csv(tmp_path / d / "results.csv", dtype={"cell_id": str}) for d in ("a", "b"))
    # The last step's rows are the cell's rows without snapshots: same id, same numbers, step = T.
    pd.testing.assert_frame_equal(a[MEASURED], b[MEASURED])
    assert (b["step"] == 10).all()
    snaps = pd.read_csv(tmp_path / "b" / "snapshots.csv", dtype={"cell_id": str})
    assert sorted(set(snaps["step"])) == [2, 5] and len(snaps) == 2 * 2 and (snaps["cell_id"] == b["cell_id"][0]).all()
    assert set(snaps.groupby("step")["grad_evals"].first().items()) == {(2, 8 * 2), (5, 8 * 5)}
    assert (snaps["linf_mean"] <= 32 + 1e-9).all() and (pd.read_csv(tmp_path / "b" / "predictions_steps.csv")["step"]
                                                         .value_counts() == 16).all()
    # Step 5 of T = 10 is the attack with T = 5 at the same α (32/10): the same examples, the same rows.
    e = tmp_path / "e"
    _cli(e, c2, "steps=5", "alpha=3.2", zoo_dir=zoo_dir, cwd=tmp_path)
    five = pd.read_csv(e / "results.csv")
    got = snaps[snaps["step"] == 5].set_index("target")
    assert got["n_fooled"].to_dict() == five.set_index("target")["n_fooled"].to_dict()
    assert got["ssim_mean"].to_numpy() == pytest.approx(five["ssim_mean"].to_numpy())
    # A stored cell asked for steps it lacks crafts again, as far as the last of them, and nothing more.
    p = _cli(tmp_path / "c", c1, "snapshots=[2,5]", zoo_dir=zoo_dir, cwd=tmp_path)
    log = p.stdout + p.stderr
    assert "crafting again up to step 5" in log and "the snapshots cost 40 gradient evaluations" in log   # 8 images x 5
    c = pd.read_csv(tmp_path / "c" / "snapshots.csv", dtype={"cell_id": str})
    pd.testing.assert_frame_equal(c[MEASURED], snaps[MEASURED])
    p = _cli(tmp_path / "d", c1, "snapshots=[5]", zoo_dir=zoo_dir, cwd=tmp_path)   # every step stored: no crafting
    assert "crafting again" not in p.stdout + p.stderr and "reusing the stored adversarial set" in p.stdout + p.stderr
    # The report's compute axis has the cell at each kept step.
    run(["flatbench-report", str(tmp_path / "b")], zoo_dir, tmp_path)
    comp = pd.read_csv(tmp_path / "b" / "report" / "compute.csv")
    assert list(comp["step"]) == [2, 5, 10] and list(comp["grad_evals_per_image"]) == [2, 5, 10]
