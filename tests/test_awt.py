"""AWT (Adversarial Weight Tuning): PGN's gradient through surrogate weights that SAM tunes during the
attack. Equal to TransferAttack's model_related/awt.py on one batch; the user's model is never written."""
import pytest
import torch

from flatbench import create_attack
from flatbench.attacks.estimators import uniform_noise
from flatbench.core.registry import ConfigError
from helpers import run
from ta_reference import TAModel, TA_EPS, ta_data
from ta_reference_awt import ta_awt


def _reference(model, data, label, n, noise, **kw):
    return ta_awt(model, data, label, epoch=10, alpha=TA_EPS / 10, gamma=0.5, num_neighbor=n, sam_lr=0.002,
                  sam_rho=0.005, noise=noise, **kw)


def _equal(got, want):
    return (got - want).abs().max() <= 2e-7 and torch.equal((got * 255).round(), (want * 255).round())


def test_awt_ta_equals_transferattack_with_no_draws_and_under_its_draws():
    """AWT-TA is awt.py's forward on one batch (its SAM class, SGD momentum 0.5, the weights' gradients never
    zeroed, γ = 0.5, ζ = 3ε, α = ε/T): with ζ = 0 and with its uniform draws replaced by the package's keyed
    ones, the 8-bit images are the port's. Broken variants tried: SAM's ascent without the carried gradient
    (the ζ = 0 case moves), and the weight loss at x + δ alone (without the clean term)."""
    model, (data, label) = TAModel(), ta_data()
    zero = create_attack("awt_ta", model, eps=TA_EPS, zeta=0.0, n_samples=2)
    assert (zero.label, zero.estimator.carry_grad, zero.estimator.r) == ("AWT-TA", True, pytest.approx(TA_EPS / 10))
    want, tuned = _reference(model, data, label, 2, lambda t, i: torch.zeros_like(data))
    assert _equal(zero(data, label), want)
    attack = create_attack("awt_ta", model, eps=TA_EPS, n_samples=2)
    got = attack(data, label)
    noise = lambda t, i: uniform_noise(attack.step_context(0, t), data, i, i + 1, 3 * TA_EPS, "noise")  # noqa: E731
    assert _equal(got, _reference(model, data, label, 2, noise)[0])
    # the tuning moved the weights (the reference's copy shows by how much); the model itself did not move
    moved = max((a - b).abs().max().item() for a, b in zip(tuned.parameters(), model.parameters()))
    assert moved > 1e-4
    assert attack.grad_evals == attack.predicted_grad_evals(len(data)) == 10 * (2 * 2 + 4) * len(data)


def test_awt_is_sam_as_written_and_without_tuning_it_is_pgn():
    """``awt`` ascends along each step's own weight gradient: the port's loop with the gradients zeroed
    before each step. With sam_lr = 0 and sam_rho = 0 the weights never move and AWT is PGN, bit for bit
    (at four more passes a step). Broken variant tried: awt built with carry_grad (the first check fails)."""
    model, (data, label) = TAModel(), ta_data()
    zero = lambda t, i: torch.zeros_like(data)  # noqa: E731
    got = create_attack("awt", model, eps=TA_EPS, zeta=0.0, n_samples=1)(data, label)
    assert _equal(got, _reference(model, data, label, 1, zero, zero_grad_each_step=True)[0])
    port = create_attack("awt_ta", model, eps=TA_EPS, zeta=0.0, n_samples=1)(data, label)
    assert not torch.equal(got, port)
    still = create_attack("awt", model, eps=TA_EPS, n_samples=2, sam_lr=0.0, sam_rho=0.0)
    pgn = create_attack("pgn", model, eps=TA_EPS, n_samples=2)
    assert torch.equal(still(data, label), pgn(data, label))
    assert still.grad_evals == pgn.grad_evals + 10 * 4 * len(data)


def test_awt_never_writes_the_users_model():
    """The model comes back as it came: its weights bit for bit, its mode (train here), its requires_grad, and no
    .grad on any parameter; also when the attack raises mid-way. Broken variant tried: SGD's step written in
    place on the model's own parameter storage (tuning without a copy)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 10)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data, label = ta_data()
    out = create_attack("awt_ta", model, eps=TA_EPS, n_samples=2)(data, label)
    assert (out - data).abs().max() <= TA_EPS + 1e-6 and 0 <= out.min() and out.max() <= 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    calls = []

    def explode(module, args, output):
        calls.append(1)
        if len(calls) == 9:    # inside the second step, after a SAM step has tuned the copy
            raise RuntimeError("stop")

    handle = model[4].register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="stop"):
        create_attack("awt_ta", model, eps=TA_EPS, n_samples=2)(data, label)
    handle.remove()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())


def test_awt_refuses_a_collected_set():
    from flatbench.models import CollectedModels

    data, label = ta_data()
    with pytest.raises(ConfigError, match="AWT tunes one surrogate's weights"):
        create_attack("awt", CollectedModels([TAModel(7), TAModel(8)]), eps=TA_EPS, n_samples=1)(data, label)


def test_awt_from_the_command_line(trained_zoo, zoo_dir, tmp_path):
    """method=awt and awt_ta run as cells on the digits testbed: SAM's settings are columns, the cost counts SAM's
    four weight-gradient passes per step, and the examples keep the ball."""
    import pandas as pd

    run(["flatbench", "-m", "method=awt,awt_ta", "estimator.n_samples=1", "steps=3", "n_images=8",
         "targets=digits_small", "progress=false", f"hydra.sweep.dir={tmp_path / 'awt'}"], zoo_dir, tmp_path)
    df = pd.concat(pd.read_csv(f) for f in tmp_path.glob("awt/*/results.csv")).drop_duplicates("cell_id")
    assert sorted(set(df["attack"])) == ["AWT", "AWT-TA"] and df["cell_id"].nunique() == 2
    assert (df["estimator.sam_lr"] == 0.002).all() and (df["estimator.sam_rho"] == 0.005).all()
    assert df.set_index("attack")["estimator.carry_grad"].to_dict() == {"AWT": False, "AWT-TA": True}
    assert (df["grad_evals"] == 8 * 3 * (2 * 1 + 4)).all()
    assert (df["linf_mean"] <= df["eps"] + 1e-6).all()   # 1/255 units


@pytest.mark.parametrize("transforms", [["dim"], ["sim"]])
def test_awt_composes_with_the_input_transforms(transforms):
    """As in the port, SAM's losses at x + δ and x go through the input transforms too: every weight-gradient
    pass counts its copies (SIM: 5 views an image), so grad_evals is the prediction; the examples keep the ball
    and the box, repeat under a seed, and the model is untouched. Broken variant tried: the weight loss taken
    on the untransformed images (the count falls short by 4·(copies − 1) a step)."""
    model, (data, label) = TAModel(), ta_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack = create_attack("awt", model, eps=TA_EPS, n_samples=2, transforms=transforms)
    out = attack(data, label, seed=3)
    assert attack.grad_evals == attack.predicted_grad_evals(len(data)) == attack.copies * 10 * (2 * 2 + 4) * len(data)
    assert (out - data).abs().max() <= TA_EPS + 1e-6 and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, create_attack("awt", model, eps=TA_EPS, n_samples=2, transforms=transforms)(data, label, seed=3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
