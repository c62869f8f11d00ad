"""The attack engine: threat model, formulas on a known Hessian, equivalences, determinism."""
import math

import pytest
import torch

from flatbench import create_attack
from flatbench.attacks import (DIM, METHODS, SIM, TIM, Admix, NonFiniteError, Penalty, build_attack,
                               gaussian_kernel, keyed_generator)
from flatbench.attacks.factory import METHOD_PRESETS
from flatbench.attacks.optimizers import mean_abs_normalize
from flatbench.core.registry import ConfigError
from analytic import Quadratic, SinSquare, estimate
from ta_reference_views import surrogate_for

FAST = dict(n_samples=3)  # keep neighbour counts small for the property tests


def _kwargs(method):
    kw = dict(FAST) if METHODS[method][1] in ("pgn", "vmi", "gra", "mef") else {}
    if METHODS[method][1] == "rap":
        kw.update(late_start=1, inner_steps=2)   # RAP from the second step on, with a short inner loop
    if METHOD_PRESETS[method].get("alpha") is not None:
        kw["alpha"] = None   # eps/steps: a preset's fixed alpha (MEF 1.6/255) would not span the ball in 3 steps
    return kw


UNTARGETED_ONLY = {"gra_oc", "fgsra"}   # methods that refuse targeted=true, with a one-line error


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_ball_and_box_hold(method, targeted, norm, small_cnn):
    torch.manual_seed(1)
    x = torch.rand(4, 3, 16, 16)
    x[0] = 0.0  # images on the box's faces must stay inside it
    x[1] = 1.0
    y = torch.randint(0, 5, (4,))
    eps = 8 / 255 if norm == "linf" else 0.5
    if method in UNTARGETED_ONLY and targeted:   # GRA-OC's labels are the clean prediction; FGSRA's port is untargeted
        with pytest.raises(ConfigError, match="label_by=clean_prediction|untargeted only"):
            create_attack(method, small_cnn, eps=eps, steps=3, norm=norm, targeted=targeted, **_kwargs(method))
        return
    attack = create_attack(method, surrogate_for(method, small_cnn), eps=eps, steps=3, norm=norm, targeted=targeted,
                           **_kwargs(method))
    x_adv = attack(x, y, seed=3)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv - x).flatten(1)
    dist = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (dist <= eps + 1e-6).all(), dist
    assert dist.max() > 0.5 * eps  # it moved


@pytest.mark.parametrize("preset,s", [("pgn", -1.0), ("gnp", 1.0)])
def test_penalty_formula_exact_on_quadratic(preset, s):
    q = Quadratic(12)
    x = torch.rand(3, 3, 2, 2, dtype=torch.float64)
    beta, r = 0.7, 0.05
    est = Penalty(beta, r, 0.0, 1, "descent" if s < 0 else "ascent", preset)
    got = estimate(est, q, x)
    g = q.grad(x)
    ghat = mean_abs_normalize(g)
    want = g - s * beta * (q.grad(x + s * r * ghat) - g)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # For a quadratic, g(x + s·r·ĝ) − g = s·r·A·ĝ, so both presets equal g − β·r·A·ĝ.
    a_ghat = (ghat.flatten(1) @ q.A).view_as(x)
    torch.testing.assert_close(got, g - beta * r * a_ghat, rtol=1e-9, atol=1e-9)


def test_gnp_sign_is_the_derivations():
    """GNP = (1+β)·g(x) − β·g(x + r·ĝ): a step along −∇‖∇ℓ‖ to first order, not the +β·g2 of a port."""
    q = Quadratic(12, seed=3)
    x = torch.rand(2, 3, 2, 2, dtype=torch.float64)
    est = create_attack("gnp", q, eps=0.1).estimator
    r, beta = est.r, est.beta
    assert (beta, r, est.zeta, est.n_samples, est.lookahead) == (0.8, 0.01, 0.0, 1, "ascent")
    got = estimate(est, q, x)
    g = q.grad(x)
    g2 = q.grad(x + r * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1))  # the paper's L2-normalised look-ahead
    torch.testing.assert_close(got, (1 + beta) * g - beta * g2)
    assert not torch.allclose(got, (1 + beta) * g + beta * g2)


def test_penalty_first_order_on_smooth_nonquadratic():
    """For small r the estimate is g − β·r·H·ĝ up to O(r²), on ℓ = Σ sin(x)·x² (known Hessian)."""
    F = SinSquare
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64) + 0.5
    g, h = SinSquare.grad_and_hessian(x)
    errs = []
    for r in (1e-2, 1e-3):
        for preset, la in (("pgn", "descent"), ("gnp", "ascent")):
            got = estimate(Penalty(0.5, r, 0.0, 1, la, preset), F(), x)
            want = g - 0.5 * r * h * mean_abs_normalize(g)
            errs.append(float((got - want).abs().max()))
    assert errs[2] < errs[0] / 50 and errs[3] < errs[1] / 50  # error shrinks like r²


def test_pgn_defaults_match_design():
    a = create_attack("pgn", torch.nn.Identity(), eps=16 / 255)
    e = a.estimator
    assert (e.beta, e.zeta, e.n_samples, e.lookahead) == (0.5, 3.0, 20, "descent")
    assert e.r == a.alpha and "r" in e.from_alpha  # null in the declaration: r = α, bound by the loop
    assert a.optimizer.decay == 1.0 and a.steps == 10 and math.isclose(a.alpha, 1.6 / 255)


@pytest.mark.parametrize("preset", ["pgn", "gnp"])
def test_penalty_with_beta_zero_is_mifgsm(preset, small_cnn):
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    mi = create_attack("mifgsm", small_cnn, eps=8 / 255, steps=5)(x, y)
    pen = create_attack(preset, small_cnn, eps=8 / 255, steps=5, beta=0.0, zeta=0.0, n_samples=1)(x, y)
    assert torch.equal(mi, pen)


def _sequential_pgn_grad(attack, x, y, seed, step):
    """The public reference's loop: one neighbour at a time, same keyed noise as flatbench."""
    est = attack.estimator
    ctx = attack.step_context(seed, step)
    total = torch.zeros_like(x)
    radius = est.zeta * attack.eps
    for i in range(est.n_samples):
        u = torch.rand(x.shape, generator=ctx.rng("noise", i))
        xp = x + (2 * u - 1) * radius
        g1 = ctx.grad(xp, y, [("g1", i)])
        r = attack.alpha if est.r is None else est.r
        g2 = ctx.grad(xp + est.sign * r * mean_abs_normalize(g1), y, [("g2", i)])
        total += g1 - est.sign * est.beta * (g2 - g1)
    return total / est.n_samples


@pytest.mark.parametrize("method", ["pgn", "pgn_dim_tim"])
def test_batched_neighbours_equal_sequential_loop(method, small_cnn):
    torch.manual_seed(0)
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 5, (4,))
    ref = create_attack(method, small_cnn, eps=16 / 255, n_samples=6, chunk=4)  # one neighbour per chunk
    seq = _sequential_pgn_grad(ref, x, y, seed=5, step=0)
    for chunk in (4, 8, 12, 24, None):
        a = create_attack(method, small_cnn, eps=16 / 255, n_samples=6, chunk=chunk)
        got = a.estimator(a.step_context(5, 0), x, y)
        torch.testing.assert_close(got, seq, rtol=1e-5, atol=1e-7)
    outs = [create_attack(method, small_cnn, eps=16 / 255, n_samples=6, chunk=mb)(x, y, seed=2)
            for mb in (4, 12, None)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_vmi_chunking_does_not_change_results(small_cnn):
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    outs = [create_attack("vmi_dim", small_cnn, eps=16 / 255, n_samples=5, chunk=mb)(x, y, seed=1)
            for mb in (3, 9, None)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


class Constant(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 5) + 0.0 * x.flatten(1)[:, :5]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_zero_gradient_gives_no_nan(method, norm):
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    x_adv = create_attack(method, surrogate_for(method, Constant()), eps=8 / 255, steps=2, norm=norm, **_kwargs(method))(x, y)
    assert torch.isfinite(x_adv).all()
    assert torch.equal(x_adv, x)  # nothing to ascend


def test_vanishing_gradient_for_one_example(small_cnn):
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    class Mask(torch.nn.Module):
        def forward(self, z):
            out = small_cnn(z)
            keep = torch.ones_like(out)
            keep[0::2] = 0  # every other image's logits are constant in x
            return out * keep

    x_adv = create_attack("pgn", Mask(), eps=8 / 255, steps=2, n_samples=3)(x, y)
    assert torch.isfinite(x_adv).all() and torch.equal(x_adv[0], x[0]) and not torch.equal(x_adv[1], x[1])


def test_nonfinite_gradient_stops_with_step():
    class Bad(torch.nn.Module):
        def forward(self, x):
            return torch.log(x.flatten(1)[:, :5] - 2.0)  # NaN everywhere

    with pytest.raises(NonFiniteError, match="step 1"):
        create_attack("mifgsm", Bad(), eps=8 / 255)(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))


@pytest.mark.parametrize("method", ["pgn", "vmifgsm", "dim", "admix"])
def test_seed_determinism(method, small_cnn):
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    mk = lambda: create_attack(method, small_cnn, eps=16 / 255, steps=3, **_kwargs(method))  # noqa: E731
    a, b, c = mk()(x, y, seed=7), mk()(x, y, seed=7), mk()(x, y, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_keyed_generator_independent_of_draw_order():
    g1 = keyed_generator((1, 2, "noise", 3), torch.device("cpu"))
    g2 = keyed_generator((1, 2, "noise", 3), torch.device("cpu"))
    torch.rand(5, generator=g2)
    g3 = keyed_generator((1, 2, "noise", 3), torch.device("cpu"))
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g3))


def test_tim_kernel_formula():
    k = gaussian_kernel(15, 3.0)
    assert k.shape == (15, 15) and math.isclose(float(k.sum()), 1.0, rel_tol=1e-6)
    t = torch.linspace(-3, 3, 15, dtype=torch.float64)
    k1 = torch.exp(-t**2 / 2)
    want = torch.outer(k1, k1) / torch.outer(k1, k1).sum()
    torch.testing.assert_close(k.double(), want, rtol=1e-6, atol=1e-9)
    assert torch.equal(k, k.T) and int(k.argmax()) == 7 * 15 + 7
    g = torch.zeros(1, 3, 21, 21)
    g[0, :, 10, 10] = 1.0  # an impulse comes back as the kernel, per channel
    out = TIM(15, 3.0)(g)
    torch.testing.assert_close(out[0, 1, 3:18, 3:18], k)
    assert TIM(7, 3.0).kernel.shape == (7, 7)


def test_dim_follows_resize_pad_rule():
    d = DIM(resize_rate=1.1, prob=1.0)
    x = torch.rand(2, 3, 32, 32)
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        rnd, out, top, left = d.draw(32, gen, x.device)
        assert out == 35 and 32 <= rnd < 35 and 0 <= top <= out - rnd and 0 <= left <= out - rnd
        z = d.resize_pad(x, rnd, out, top, left)
        assert z.shape[-2:] == (35, 35)
        inside = torch.zeros(35, 35, dtype=torch.bool)
        inside[top:top + rnd, left:left + rnd] = True
        assert (z[..., ~inside] == 0).all()
    assert d(x, torch.Generator().manual_seed(0)).shape == x.shape
    assert torch.equal(DIM(prob=0.0)(x, torch.Generator()), x)


def test_sim_and_admix_views():
    x = torch.rand(4, 3, 8, 8)
    s = SIM(5)(x, torch.Generator())
    assert s.shape == (20, 3, 8, 8) and torch.allclose(s[4:8], x / 2)
    a = Admix(0.2, 3, 5)
    z = a(x, torch.Generator().manual_seed(0))
    assert z.shape == (4 * 15, 3, 8, 8) and a.copies == 15
    partners = (z[:4] - x) / 0.2  # the first view mixes each image with another image of the batch
    assert all(any(torch.allclose(partners[i], x[j], atol=1e-5) for j in range(4)) for i in range(4))


def test_create_attack_routes_and_rejects_keywords(small_cnn):
    a = create_attack("pgn_dim_tim", small_cnn, eps=16 / 255, steps=10, n_samples=20, zeta=3.0, beta=0.5,
                      resize_rate=1.2, kernel_size=7, decay=0.9)
    assert a.transforms[0].resize_rate == 1.2 and a.filters[0].kernel_size == 7 and a.optimizer.decay == 0.9
    assert a.label == "PGN+DIM+TIM"
    with pytest.raises(ConfigError, match="unknown keyword 'bta'.*Did you mean 'beta'"):
        create_attack("pgn", small_cnn, eps=0.1, bta=0.3)
    with pytest.raises(ConfigError, match="Valid choices"):
        create_attack("pgm", small_cnn, eps=0.1)
    with pytest.raises(ConfigError, match="several transforms"):
        create_attack("mifgsm", small_cnn, eps=0.1, transforms=["sim", "admix"], num_scale=3)
    with pytest.raises(ConfigError, match="odd"):
        create_attack("tim", small_cnn, eps=0.1, kernel_size=4)
    with pytest.raises(ConfigError, match=r"estimator\.beta=-1 is out of range; allowed: >= 0"):
        create_attack("pgn", small_cnn, eps=0.1, beta=-1)
    assert create_attack("gnp", small_cnn, eps=0.1, optimizer="nifgsm").label == "NI-FGSM+GNP"


def test_targeted_attack_reaches_target(small_cnn):
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    t = torch.full((8,), 3)
    x_adv = create_attack("mifgsm", small_cnn, eps=64 / 255, steps=20, targeted=True)(x, t)
    with torch.no_grad():
        before = (small_cnn(x).argmax(1) == 3).float().mean()
        after = (small_cnn(x_adv).argmax(1) == 3).float().mean()
    assert before == 0 and after >= 0.5


def test_ensemble_averages_logits(small_cnn):
    from flatbench.models import Ensemble

    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 5))
    x = torch.rand(2, 3, 16, 16)
    e = Ensemble([small_cnn, other])
    torch.testing.assert_close(e(x), (small_cnn(x) + other(x)) / 2)
    assert create_attack("mifgsm", e, eps=8 / 255, steps=2)(x, torch.tensor([0, 1])).shape == x.shape


def test_create_attack_names_the_renamed_keyword():
    with pytest.raises(ConfigError, match=r"penalty= is estimator= since flatbench 0\.2"):
        create_attack("mifgsm", torch.nn.Identity(), eps=16 / 255, penalty="pgn")
    assert create_attack("mifgsm", torch.nn.Identity(), eps=16 / 255, estimator="pgn").label == "PGN"


def test_build_attack_from_part_names(small_cnn):
    a = build_attack(small_cnn, optimizer="nifgsm", estimator="vmi", estimator_kwargs={"n_samples": 2},
                     transforms={"sim": {"num_scale": 2}}, eps=0.05)
    assert a.label == "NI-FGSM+VMI+SIM" and a.copies == 2


def _changed(key, value):
    """Another valid value of a part's setting."""
    other = {"lookahead": {"descent": "ascent", "ascent": "descent"}, "normalize": {"mean_abs": "l2", "l2": "mean_abs", "none": "l1", "l1": "none"},
             "combine": {"difference": "sum", "sum": "difference"}, "interpolation": {"nearest": "bilinear"},
             "inner_loss": {"reverse": "official", "official": "reverse"},
             "label_by": {"truth": "clean_prediction", "clean_prediction": "truth"},
             "sampling": {"linear": "uniform", "uniform": "gaussian", "gaussian": "linear"},
             "aggregation": {"paper": "transferattack", "transferattack": "paper"},
             "indicator": {"momentum": "gradient", "gradient": "momentum"}}
    if key in other:
        return other[key][value]
    if isinstance(value, bool):
        return not value
    if key == "kernel_size":
        return value + 2
    if key == "members":   # null: the ensemble's size
        return 3
    if key in ("prob", "eta", "max_shift", "lam", "mask_range", "sam_momentum"):   # in [0, 1]
        return value / 2
    if key == "n_views":   # a square
        return (int(value ** 0.5) + 1) ** 2
    if value is None:  # r = alpha
        return 0.02
    return type(value)(value * 2 + 1) if isinstance(value, int) else value * 1.5 + 0.25


@pytest.mark.parametrize("name", sorted(METHODS))
def test_describe_is_written_from_the_parts(name):
    """Attack.describe shows the loop a method runs with its values: every setting of every part
    (each enters the cell id) moves the text, and so do ε, T and the threat model."""
    base = create_attack(name, torch.nn.Identity(), eps=16 / 255)
    text = base.describe()
    # T and α are the loop's defaults (10, ε/T) unless the preset fixes them (RAP: 400, α = ε/8; MEF: 20,
    # α = ε/10: a rule of ε, written before its value, flatbench/attacks/scaling.py).
    rule = f"{base.rules['alpha']} = " if "alpha" in getattr(base, "rules", {}) else ""
    assert text.startswith(base.label) and f"ε = 16/255 (linf), T = {base.steps}, α = {rule}{base.alpha * 255:g}/255" in text
    for part in (base.optimizer, base.estimator, *base.transforms, *base.filters):
        for key, value in part.params().items():
            other = create_attack(name, torch.nn.Identity(), eps=16 / 255, **{key: _changed(key, value)})
            assert other.describe() != text, (name, key)
    for kw in ({"eps": 8 / 255}, {"steps": 5}, {"norm": "l2", "eps": 1.0}, {"targeted": True}):
        if name in UNTARGETED_ONLY and "targeted" in kw:   # (test_ball_and_box_hold checks the error)
            continue
        assert create_attack(name, torch.nn.Identity(), **{"eps": 16 / 255, **kw}).describe() != text, kw


def test_describe_states_the_formulas_the_code_runs():
    pgn = create_attack("pgn", torch.nn.Identity(), eps=16 / 255).describe()
    assert "u_i ~ U(−3·ε, 3·ε) per pixel" in pgn and "g2 = ∇ℓ(x' − r·g1/mean|g1|),   r = α = 1.6/255" in pgn
    assert "(1−β)·g1 + β·g2,   β = 0.5" in pgn and "N = 20" in pgn and "m = 1·m + g/mean|g|" in pgn
    gnp = create_attack("gnp", torch.nn.Identity(), eps=16 / 255).describe()
    assert "x' = x_eval   (ζ = 0: no sampling)" in gnp and "g2 = ∇ℓ(x' + r·g1/‖g1‖₂),   r = 2.55/255 = 0.01" in gnp
    assert "(1+β)·g1 − β·g2,   β = 0.8" in gnp
    ta = create_attack("gnp_ta", torch.nn.Identity(), eps=16 / 255).describe()
    assert "g2 = ∇ℓ(x' + r·g1/mean|g1|)" in ta and "ḡ += (1+β)·g1 + β·g2" in ta and "not the penalty's gradient" in ta
    # Under L2 every look-ahead is an L2 step, whatever normalize says (threat.L2Ball.lookahead).
    l2 = create_attack("pgn", torch.nn.Identity(), eps=1.0, norm="l2", optimizer="nifgsm").describe()
    assert "r·g1/‖g1‖₂" in l2 and "x + δ + α·1·m/‖m‖₂" in l2 and "scaled down to ‖δ‖₂ ≤ ε" in l2
    tim = create_attack("mi_dim_tim", torch.nn.Identity(), eps=16 / 255, kernel_size=7).describe()
    assert tim.index("g = ∇ℓ(x_eval)") < tim.index("7×7 Gaussian") < tim.index("m = 1·m")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_predicted_grad_evals_equal_the_count(method, small_cnn):
    """Attack.predicted_grad_evals (what flatbench plan counts) equals the passes the loop makes,
    for every preset: neighbours, look-aheads, transform copies, RAP's late start and inner steps."""
    kw = {**_kwargs(method), "steps": 3}
    attack = create_attack(method, surrogate_for(method, small_cnn), eps=8 / 255, **kw)
    x, y = torch.rand(5, 3, 16, 16), torch.randint(0, 5, (5,))
    attack(x, y)
    assert attack.grad_evals == attack.predicted_grad_evals(5) > 0
