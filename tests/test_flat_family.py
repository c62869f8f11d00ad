"""RAP, GRA, MEF and ANDA (issue 26): each equal to a reference written out from TransferAttack's
``transferattack/gradient/{rap,gra,mef,anda}.py`` (read for these tests; nothing of it is vendored
and the references share no code with the package). The random ones replay the package's own
draws: each part exposes its noise (``RAP.start``, ``uniform_noise``), and the reference consumes
those numbers where the port calls ``uniform_``."""
import pytest
import torch
import torch.nn.functional as F

from flatbench import create_attack
from flatbench.attacks.estimators import uniform_noise
from flatbench.registry import ConfigError
from test_fidelity import _TAModel

EPS = 16 / 255


def _data(b=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    # A power-of-two batch: the port's mean loss is the sum × 2^-k, exactly.
    return torch.rand(b, 3, 16, 16, generator=g), torch.randint(0, 10, (b,), generator=g)


def _clamp(x, lo, hi):  # transferattack/utils.py: clamp
    return torch.min(torch.max(x, lo), hi)


def _update_delta(delta, data, momentum, alpha):  # transferattack/attack.py: update_delta (L∞)
    delta = torch.clamp(delta + alpha * momentum.sign(), -EPS, EPS)
    return _clamp(delta, 0 - data, 1 - data).detach().requires_grad_(True)


def _momentum(grad, momentum, decay):  # transferattack/attack.py: get_momentum
    return momentum * decay + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)


def _grad(model, x, wrt, label):
    return torch.autograd.grad(F.cross_entropy(model(x), label), wrt)[0]


# ---------------------------------------------------------------- the references, from the port

def ta_rap(model, data, label, *, epoch, alpha, transpoint, epsilon_n, alpha_n, adv_steps, start):
    """gradient/rap.py, L∞, random_start=False for δ; ``start(it)`` replaces n_rap's uniform_."""
    delta = torch.zeros_like(data, requires_grad=True)
    momentum, n_rap = 0, torch.zeros_like(data)
    for it in range(epoch):
        if it >= transpoint:   # get_n_rap(data + delta)
            base = (data + delta).detach()
            n = _clamp(start(it), 0 - base, 1 - base).requires_grad_(True)
            for _ in range(adv_steps):
                loss = -F.cross_entropy(model(base + n), label)
                g = torch.autograd.grad(loss, n)[0]
                n = torch.clamp(n + alpha_n * g.sign(), -epsilon_n, epsilon_n)
                n = _clamp(n, 0 - base, 1 - base).detach().requires_grad_(True)
            n_rap = n.detach()
        grad = _grad(model, data + delta + n_rap, delta, label)
        momentum = _momentum(grad, momentum, 1.0)
        delta = _update_delta(delta, data, momentum, alpha)
    return (data + delta).detach()


def ta_gra(model, data, label, *, epoch, alpha, radius, num_neighbor, eta, noise):
    """gradient/gra.py; ``noise(t, i)`` replaces each neighbour's uniform_(−radius, radius)."""
    delta = torch.zeros_like(data, requires_grad=True)
    M = torch.full_like(delta, 1 / eta)
    momentum = 0
    for t in range(epoch):
        grad = _grad(model, data + delta, delta, label)
        samgrad = 0
        for i in range(num_neighbor):
            samgrad += _grad(model, data + delta + noise(t, i), delta, label)
        samgrad = samgrad / num_neighbor
        cur, sam = grad.view(grad.size(0), -1), samgrad.view(samgrad.size(0), -1)
        s = torch.sum(cur * sam, dim=1) / (torch.sqrt(torch.sum(cur ** 2, dim=1)) * torch.sqrt(torch.sum(sam ** 2, dim=1)))
        s = s.unsqueeze(-1).unsqueeze(-1).unsqueeze(-1)
        current = s * grad + (1 - s) * samgrad
        last = momentum
        momentum = _momentum(current, momentum, 1.0)
        if isinstance(last, int):
            last = torch.full(momentum.shape, last)
        eq = (last.sign() == momentum.sign()).float()
        M = M * (eq + (torch.ones_like(delta) - eq) * eta)
        delta = _update_delta(delta, data, momentum, M * alpha)
    return (data + delta).detach()


def ta_mef(model, data, label, *, epoch, alpha, num_neighbor, gamma, kesai, inner_decay, decay, noise):
    """gradient/mef.py; ``noise(t)`` replaces zeros_like(grad_pgia).uniform_(−γ, γ)."""
    delta = torch.zeros_like(data, requires_grad=True)
    momentum = 0
    b, c, h, w = data.shape
    pgia = torch.zeros([num_neighbor, b, c, h, w])
    for t in range(epoch):
        sample = delta + noise(t)
        sample = sample + kesai * pgia
        grads = torch.zeros([num_neighbor, b, c, h, w])
        for i in range(num_neighbor):
            x_min = data + sample[i]
            loss = F.cross_entropy(model(x_min), label, reduction="none")
            grads[i] = torch.autograd.grad(loss.mean(), x_min)[0]
        gradient = (1 / num_neighbor) * grads
        pgia = (gradient / torch.mean(torch.abs(gradient), (2, 3, 4), keepdim=True)).detach() - inner_decay * pgia
        momentum = _momentum(gradient.sum(0), momentum, decay)
        delta = _update_delta(delta, data, momentum, alpha)
    return (data + delta).detach()


def ta_anda(model, data, label, *, epoch, alpha, n_ens, aug_max):
    """gradient/anda.py with sample=False (batch size 1, as the port requires)."""
    assert data.shape[0] == 1
    k = int(n_ens ** 0.5)
    r = torch.linspace(-aug_max, aug_max, k)
    thetas = torch.cat([torch.tensor([[[1, 0, i], [0, 1, j]]], dtype=torch.float) for i in r for j in r])
    xt, lo, hi = data.clone(), data - EPS, data + EPS
    mean, n_models = torch.zeros((1,) + data.shape[1:]), 0
    for _ in range(epoch):
        batch = xt.repeat(n_ens, 1, 1, 1)
        batch.requires_grad = True
        aug = F.grid_sample(batch, F.affine_grid(thetas, batch.size(), align_corners=False), align_corners=False)
        loss = F.cross_entropy(model(aug), label.repeat(n_ens), reduction="sum")
        grad = torch.autograd.grad(loss, batch)[0]
        mean = mean * n_models / (n_models + n_ens) + grad.sum(dim=0, keepdim=True) / (n_models + n_ens)
        n_models += n_ens
        xt = xt + alpha * mean.sign()
        xt = torch.clamp(xt, 0.0, 1.0).detach()
        xt = torch.max(torch.min(xt, hi), lo).detach()
    return xt


# ---------------------------------------------------------------- equality

def test_rap_equals_transferattack():
    model = _TAModel()
    data, label = _data()
    # The official arguments but T = 12 with the late start at 4 (T = 400 would take minutes here).
    kw = dict(steps=12, alpha=2 / 255, late_start=4, eps_n=16 / 255, alpha_n=2 / 255, inner_steps=8)
    attack = create_attack("rap", model, eps=EPS, **kw)
    got = attack(data, label)
    start = lambda it: attack.estimator.start(attack.step_context(0, it), data)  # noqa: E731
    want = ta_rap(model, data, label, epoch=12, alpha=2 / 255, transpoint=4, epsilon_n=16 / 255, alpha_n=2 / 255,
                  adv_steps=8, start=start)
    assert (got - want).abs().max() <= 1e-6
    # The late start matters: RAP from the first step is another attack.
    assert (create_attack("rap", model, eps=EPS, **{**kw, "late_start": 0})(data, label) - got).abs().max() > 1e-3


def test_gra_equals_transferattack():
    model = _TAModel()
    data, label = _data()
    attack = create_attack("gra", model, eps=EPS, n_samples=6)
    got = attack(data, label)
    radius = 3.5 * EPS
    noise = lambda t, i: uniform_noise(attack.step_context(0, t), data, i, i + 1, radius, "noise")  # noqa: E731
    want = ta_gra(model, data, label, epoch=10, alpha=EPS / 10, radius=radius, num_neighbor=6, eta=0.94, noise=noise)
    assert (got - want).abs().max() <= 1e-6


def test_mef_equals_transferattack():
    model = _TAModel()
    data, label = _data()
    attack = create_attack("mef", model, eps=EPS, n_samples=6)
    assert (attack.steps, attack.alpha, attack.optimizer.decay) == (20, 1.6 / 255, 0.5)
    got = attack(data, label)
    noise = lambda t: uniform_noise(attack.step_context(0, t), data, 0, 6, 2.0 * EPS, "noise").view(6, *data.shape)  # noqa: E731
    want = ta_mef(model, data, label, epoch=20, alpha=1.6 / 255, num_neighbor=6, gamma=2.0 * EPS, kesai=0.15 * EPS,
                  inner_decay=0.9, decay=0.5, noise=noise)
    assert (got - want).abs().max() <= 1e-6


def test_anda_equals_transferattack():
    model = _TAModel()
    data, label = _data(b=1, seed=5)
    got = create_attack("anda", model, eps=EPS)(data, label)
    want = ta_anda(model, data, label, epoch=10, alpha=EPS / 10, n_ens=25, aug_max=0.3)
    assert (got - want).abs().max() <= 1e-6
    # Each image of a batch keeps its own statistics: a batch crafts what one image at a time does.
    batch, labels = _data(b=4, seed=6)
    attack = create_attack("anda", model, eps=EPS)
    alone = torch.cat([attack(batch[i:i + 1], labels[i:i + 1]) for i in range(4)])
    assert (attack(batch, labels) - alone).abs().max() <= 1e-6


# ---------------------------------------------------------------- composition, settings, the command line

def test_the_family_composes_with_the_loop(small_cnn):
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    cases = [("mef_dim_tim", {"n_samples": 3, "kernel_size": 5}, "MEF+DIM+TIM"),
             ("gra", {"optimizer": "nifgsm", "n_samples": 3}, "NI-FGSM+GRA"),
             ("rap", {"transforms": ["dim"], "steps": 4, "late_start": 1, "inner_steps": 2}, "RAP+DIM"),
             ("anda", {"optimizer": "mifgsm", "transforms": ["dim", "tim"], "kernel_size": 5}, "MI-FGSM+ANDA+DIM+TIM"),
             ("pgn", {"optimizer": "gra_momentum", "n_samples": 3}, "GRA-MI+PGN")]
    for method, kw, label in cases:
        attack = create_attack(method, small_cnn, eps=EPS, **kw)
        assert attack.label == label
        a, b = attack(x, y, seed=1), attack(x, y, seed=1)
        assert torch.equal(a, b), method   # the same images for the same seed
        assert (a - x).abs().max() <= EPS + 1e-6 and a.min() >= 0 and a.max() <= 1
        assert not torch.equal(a, attack(x, y, seed=2)), method   # each case draws noise (ANDA through DIM)


def test_family_settings_fail_with_the_key_and_the_range():
    for method, kw, key in (("anda", {"n_views": 24}, "estimator.n_views=24"), ("gra", {"eta": 0}, "optimizer.eta=0 "),
                            ("rap", {"inner_steps": 0}, "estimator.inner_steps=0"), ("mef", {"xi": -1.0}, "estimator.xi=-1 ")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            create_attack(method, torch.nn.Identity(), eps=EPS, **kw)


def test_gra_step_is_the_decay_indicator_times_alpha(small_cnn):
    """M starts at 1/η, becomes (1/η)·η = 1 at the first step and shrinks by η wherever sign(m) flips;
    η = 1 is MI-FGSM with GRA's gradient."""
    from flatbench.attacks import OPTIMIZERS

    opt, state = OPTIMIZERS.build("gra_momentum"), {}
    opt.update(torch.tensor([[1.0, -1.0, 2.0, -2.0]]), state)           # m = g/mean|g| = (2/3, -2/3, 4/3, -4/3)
    torch.testing.assert_close(opt.step_size(0.1, state), torch.full((1, 4), 0.1))
    opt.update(torch.tensor([[1.0, 4.0, -3.0, -4.0]]), state)           # + (1/3, 4/3, -1, -4/3): signs +, +, +, -
    torch.testing.assert_close(opt.step_size(0.1, state), torch.tensor([[0.1, 0.094, 0.1, 0.1]]))
    opt.update(torch.tensor([[-8.0, 1.0, 0.0, 7.0]]), state)            # m = (1, 2/3, 1/3, -8/3) + (-2, 1/4, 0, 7/4)
    torch.testing.assert_close(opt.step_size(0.1, state), torch.tensor([[0.094, 0.094, 0.1, 0.1]]))   # signs -, +, +, -
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    one = create_attack("gra", small_cnn, eps=EPS, n_samples=2, eta=1.0)(x, y)
    assert torch.equal(one, create_attack("gra", small_cnn, eps=EPS, n_samples=2, optimizer="mifgsm")(x, y))
    assert not torch.equal(one, create_attack("gra", small_cnn, eps=EPS, n_samples=2)(x, y))


def test_family_cells_from_the_command_line(trained_zoo, zoo_dir, tmp_path):
    import pandas as pd

    from test_run import run

    sweep = tmp_path / "sweep"
    common = ["n_images=8", "targets=digits_small", "progress=false"]
    run(["flatbench", "-m", "method=gra,mef,anda", "steps=3", *common, f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    run(["flatbench", "method=rap", "steps=3", "estimator.late_start=1", "estimator.inner_steps=2", *common,
         f"hydra.run.dir={sweep / 'rap'}"], zoo_dir, tmp_path)
    df = pd.concat(pd.read_csv(f) for f in sweep.glob("*/results.csv")).drop_duplicates("cell_id").set_index("attack")
    assert sorted(df.index) == ["ANDA", "GRA", "MEF", "RAP"]
    assert df.loc["GRA", "optimizer"] == "gra_momentum" and df.loc["GRA", "optimizer.eta"] == 0.94
    assert df.loc["GRA", "zeta"] == 3.5 and df.loc["GRA", "n_samples"] == 20       # the bare columns: same meaning
    # The presets' lengths are rules of eps (flatbench/scaling.py): at the digits eps of 32/255, MEF's
    # alpha = eps/10 and RAP's alpha = eps/8, eps_n = eps, alpha_n = eps/8.
    assert df.loc["MEF", "estimator.xi"] == 0.15 and df.loc["MEF", "decay"] == 0.5 and df.loc["MEF", "alpha"] == 3.2
    assert df.loc["RAP", "estimator.eps_n"] == 32 and df.loc["RAP", "estimator.alpha_n"] == 4 and df.loc["RAP", "alpha"] == 4
    assert df.loc["ANDA", "estimator.n_views"] == 25 and df.loc["ANDA", "optimizer"] == "ifgsm"
    # grad_evals: GRA 3·(1+20), MEF 3·20, ANDA 3·25, RAP 1 + 2·(2+1) forward/backward passes per image.
    assert df["grad_evals"].to_dict() == {"GRA": 8 * 63, "MEF": 8 * 60, "ANDA": 8 * 75, "RAP": 8 * 7}
