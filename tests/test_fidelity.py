"""Method fidelity (issue 13): GNP as the paper writes it and as TransferAttack ports it, Admix
with constant partners, look-aheads sized in the threat model's own norm, and equality with
references written out from TransferAttack's public code (transferattack/, read for these
tests; nothing of it is vendored)."""
import pandas as pd
import pytest

from flatbench.entry.settings import load_settings
import torch
import torch.nn.functional as F

from flatbench import create_attack
from flatbench.attacks import METHODS
from flatbench.core.registry import ConfigError
from analytic import Quadratic, SinSquare, estimate
from helpers import compose_config, run
from ta_reference import TAModel


def _l2n(g):
    return g / g.flatten(1).norm(dim=1).view(-1, *[1] * (g.dim() - 1))


# ---------------------------------------------------------------- GNP, both forms

def test_gnp_is_the_papers_formula_on_a_quadratic():
    q = Quadratic(12, seed=3)
    x = torch.rand(2, 3, 2, 2, dtype=torch.float64)
    est = create_attack("gnp", q, eps=0.1).estimator
    assert (est.beta, est.r, est.zeta, est.n_samples, est.lookahead, est.normalize, est.combine) == \
        (0.8, 0.01, 0.0, 1, "ascent", "l2", "difference")
    got = estimate(est, q, x)
    g = q.grad(x)
    beta, r = est.beta, est.r
    # (1+β)·∇ℓ(x) − β·∇ℓ(x + r·∇ℓ/‖∇ℓ‖₂), the paper's update ...
    torch.testing.assert_close(got, (1 + beta) * g - beta * q.grad(x + r * _l2n(g)), rtol=1e-12, atol=1e-12)
    # ... which on a quadratic is g − β·r·A·g/‖g‖₂: the gradient of ℓ − β·r·‖∇ℓ‖₂.
    a_gn = (_l2n(g).flatten(1) @ q.A).view_as(x)
    torch.testing.assert_close(got, g - beta * r * a_gn, rtol=1e-9, atol=1e-9)


def test_gnp_first_order_on_a_known_hessian():
    """On ℓ = Σ sin(x)·x² the paper form is g − β·r·H·g/‖g‖₂ up to O(r²)."""
    F_ = SinSquare
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64) + 0.5
    g, h = SinSquare.grad_and_hessian(x)
    errs = []
    for r in (1e-2, 1e-3):
        est = create_attack("gnp", F_(), eps=0.1, r=r).estimator
        errs.append(float((estimate(est, F_(), x) - (g - 0.8 * r * h * _l2n(g))).abs().max()))
    assert errs[1] < errs[0] / 50


def test_gnp_ta_is_transferattacks_formula_exactly():
    q = Quadratic(12, seed=4)
    x = torch.rand(2, 3, 2, 2, dtype=torch.float64)
    est = create_attack("gnp_ta", q, eps=0.1).estimator
    assert (est.beta, est.r, est.normalize, est.combine) == (0.8, 0.01, "mean_abs", "sum")
    got = estimate(est, q, x)
    g1 = q.grad(x)
    g2 = q.grad(x + 0.01 * g1 / g1.abs().mean(dim=(1, 2, 3), keepdim=True))
    torch.testing.assert_close(got, (1 + 0.8) * g1 + 0.8 * g2, rtol=1e-13, atol=1e-13)  # float64 round-off only


@pytest.mark.parametrize("preset", ["gnp", "gnp_ta", "pgn"])
def test_beta_zero_is_mifgsm(preset, small_cnn):
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    mi = create_attack("mifgsm", small_cnn, eps=8 / 255, steps=5)(x, y)
    assert torch.equal(mi, create_attack(preset, small_cnn, eps=8 / 255, steps=5, beta=0.0, zeta=0.0, n_samples=1)(x, y))


def test_every_gnp_preset_has_both_forms():
    for name in ("gnp", "gnp_dim_tim"):
        assert name.replace("gnp", "gnp_ta") in METHODS
    assert create_attack("gnp_ta_dim_tim", torch.nn.Identity(), eps=0.1).label == "GNP-TA+DIM+TIM"
    assert create_attack("gnp_dim_tim", torch.nn.Identity(), eps=0.1).label == "GNP+DIM+TIM"
    with pytest.raises(ConfigError, match="normalize"):
        create_attack("gnp", torch.nn.Identity(), eps=0.1, normalize="l1")
    with pytest.raises(ConfigError, match="combine"):
        create_attack("gnp", torch.nn.Identity(), eps=0.1, combine="avg")


def test_gnp_columns_and_cell_ids_tell_the_forms_apart(trained_zoo, zoo_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", "n_images=8", "targets=digits_small", "progress=false", "method=gnp,gnp_ta",
         f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    df = pd.concat(pd.read_csv(f) for f in sweep.glob("*/results.csv")).drop_duplicates("cell_id").set_index("attack")
    assert set(df.index) == {"GNP", "GNP-TA"}
    assert df.loc["GNP", "normalize"] == "l2" and df.loc["GNP", "combine"] == "difference"
    assert df.loc["GNP-TA", "normalize"] == "mean_abs" and df.loc["GNP-TA", "combine"] == "sum"
    assert df.loc["GNP", "r"] == df.loc["GNP-TA", "r"] == 2.55
    p = run(["flatbench-report", str(sweep)], zoo_dir, tmp_path)
    assert "GNP-TA" in p.stdout


# ---------------------------------------------------------------- Admix

class _Masked:
    """Cross-entropy of the views of image 0 only (labels: 0 for image 0, 1 for the others)."""

    def __call__(self, out, y):
        return F.cross_entropy(out, torch.zeros_like(y), reduction="none")[y == 0].sum()


def test_admix_partner_is_a_constant(small_cnn):
    """Image 0's loss must send no gradient into the images it was mixed with."""
    attack = create_attack("admix", small_cnn, eps=8 / 255, loss=_Masked())
    x = torch.rand(3, 3, 16, 16)
    y = torch.tensor([0, 1, 1])
    ctx = attack.step_context(seed=0, step=0)
    g = ctx.grad(x, y, [("g",)])
    assert g[0].abs().sum() > 0
    assert torch.equal(g[1:], torch.zeros_like(g[1:]))


def test_admix_never_mixes_an_image_with_itself(small_cnn):
    t = create_attack("admix", small_cnn, eps=8 / 255).transforms[0]
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    for seed in range(20):
        views = t(x, torch.Generator().manual_seed(seed))[: 3 * 4]  # the unscaled mixes
        partner = (views - x.repeat(3, 1, 1, 1)) / t.strength
        assert not torch.isclose(partner[:, 0, 0, 0], x.repeat(3, 1, 1, 1)[:, 0, 0, 0]).any()
    one = x[:1]
    with pytest.raises(ConfigError, match="partner"):
        t(one, torch.Generator().manual_seed(0))
    pool = x[1:]
    views = t.with_partners(pool)(one, torch.Generator().manual_seed(0))[:3]
    assert set(((views - one) / t.strength)[:, 0, 0, 0].tolist()) <= {1.0, 2.0, 3.0}


def test_admix_cell_with_a_batch_of_one_draws_partners_from_the_data(trained_zoo, zoo_dir, tmp_path, monkeypatch):
    """A cell of batches of one image mixes each image with other images of the data set: every
    partner Admix sees is a clean image of the set, never the batch's own."""
    from flatbench.attacks.transforms import Admix
    from flatbench.cell import run_cell
    from flatbench.cell.plan import load_data
    from flatbench.entry.config import resolve

    seen = []
    call = Admix.__call__

    def recording(self, x, gen):
        if x.shape[0] == 1:
            seen.append(self.partners.clone())
        return call(self, x, gen)

    monkeypatch.setattr(Admix, "__call__", recording)
    cfg = compose_config(["method=admix", "n_images=3", "batch_size=1", "targets=digits_small", "progress=false",
                    "transforms.admix.num_scale=2", f"paths.zoo_dir={zoo_dir or 'null'}",
                    f"paths.cache_dir={tmp_path / 'cache'}"])
    df = run_cell(load_settings(cfg), tmp_path / "r")
    assert (df["linf_mean"] > 0).all()
    images = load_data(resolve(cfg)).floats(slice(0, 3))
    steps = cfg.steps
    assert len(seen) == 3 * steps   # one call per step for each of the three images
    for i in range(3):
        for partners in seen[i * steps:(i + 1) * steps]:
            assert len(partners) == 2
            assert torch.equal(partners[0], images[(i + 1) % 3]) and torch.equal(partners[1], images[(i + 2) % 3])


# ---------------------------------------------------------------- L2: look-aheads in the threat's own norm

class _Probe(torch.nn.Module):
    """Records the inputs it sees (a linear model, so every gradient is the same)."""

    def __init__(self, d):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(d, 5, generator=torch.Generator().manual_seed(0)),
                                    requires_grad=False)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return x.flatten(1) @ self.w


PINNED = dict(chunk=None, channels_last=False)


@pytest.mark.parametrize("preset", ["pgn", "gnp", "gnp_ta"])
def test_penalty_lookahead_is_r_in_the_l2_norm(preset):
    d = 3 * 8 * 8
    m = _Probe(d)
    x, y = torch.rand(2, 3, 8, 8) * 0.5 + 0.25, torch.tensor([0, 1])
    # Pinned chunk and format (PINNED): "auto" would measure with calls of its own, and the probe records every call.
    attack = create_attack(preset, m, eps=1.0, steps=1, norm="l2", r=0.05, zeta=0.0, n_samples=1, **PINNED)
    attack(x, y)
    step = (m.seen[1] - m.seen[0]).flatten(1).norm(dim=1)
    torch.testing.assert_close(step, torch.full((2,), 0.05), rtol=1e-4, atol=1e-6)
    linf = create_attack(preset, _Probe(d), eps=0.1, steps=1, r=0.05, zeta=0.0, n_samples=1, **PINNED)
    linf.model.seen.clear()
    linf(x, y)
    big = (linf.model.seen[1] - linf.model.seen[0]).flatten(1)
    if preset != "gnp":  # mean-|g| look-aheads move each pixel by about r under L∞
        assert big.abs().mean(1).mean() == pytest.approx(0.05, rel=1e-4)
    else:  # the paper's GNP normalises by ‖g‖₂ under either threat: a look-ahead of r in L2
        torch.testing.assert_close(big.norm(dim=1), torch.full((2,), 0.05), rtol=1e-4, atol=1e-6)


def test_nifgsm_lookahead_is_alpha_in_the_l2_norm():
    d = 3 * 8 * 8
    m = _Probe(d)
    x, y = torch.rand(2, 3, 8, 8) * 0.5 + 0.25, torch.tensor([0, 1])
    attack = create_attack("nifgsm", m, eps=2.0, steps=2, alpha=0.1, norm="l2", **PINNED)
    attack(x, y)
    # x_1 = x + α·m/‖m‖₂ and step 2 evaluates at x_1 + α·μ·m/‖m‖₂ (same m): 2α from x in L2.
    # (Before: x_1 + α·μ·m with m = g/mean|g|, about √d·α away.)
    moved = (m.seen[1] - m.seen[0]).flatten(1).norm(dim=1)
    torch.testing.assert_close(moved, torch.full((2,), 0.2), rtol=1e-4, atol=1e-6)


def test_l2_eps_accepts_imagenet_radii_and_quantized_sets_stay_in_the_ball():
    from flatbench.entry.config import resolve
    from flatbench.core.quantize import quantize

    assert resolve(compose_config(["norm=l2", "eps=4000"])).eps == 4000
    with pytest.raises(ConfigError, match="eps"):
        resolve(compose_config(["norm=linf", "eps=4000"]))
    torch.manual_seed(0)
    clean = (torch.rand(16, 3, 8, 8) * 255).round().to(torch.uint8)
    eps = 3.0 / 255 * 8  # L2 radius in [0,1] units
    x = clean.float() / 255
    d = torch.randn_like(x)
    x_adv = (x + eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    q = quantize(x_adv, clean, eps, "l2")
    dist = ((q.float() - clean.float()) / 255).flatten(1).norm(dim=1)
    assert (dist <= eps + 1e-6).all() and dist.max() > 0.5 * eps


def test_l2_cell_end_to_end(trained_zoo, zoo_dir, tmp_path):
    out = tmp_path / "r"
    run(["flatbench", "norm=l2", "eps=1500", "method=pgn", "estimator.n_samples=2", "n_images=8",
         "targets=digits_small", "progress=false", f"hydra.run.dir={out}"], zoo_dir, tmp_path)
    df = pd.read_csv(out / "results.csv")
    assert (df["norm"] == "l2").all() and (df["l2_mean"] <= 1500 + 1e-6).all() and (df["l2_mean"] > 750).all()
    assert df.set_index("target").loc["digits-cnn", "asr"] > 50


# ---------------------------------------------------------------- TransferAttack's code, written out

EPS, T = 16 / 255, 10
ALPHA = EPS / T


def _ta_loop(model, data, label, grad_fn, decay=1.0):
    """transferattack/attack.py: Attack.forward with get_momentum and update_delta (L∞), the loss
    a mean cross-entropy (nn.CrossEntropyLoss()), no random start."""
    delta = torch.zeros_like(data, requires_grad=True)
    momentum = 0
    for _ in range(T):
        grad = grad_fn(delta, momentum)
        momentum = momentum * decay + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)
        delta = torch.clamp(delta + ALPHA * momentum.sign(), -EPS, EPS)
        delta = torch.min(torch.max(delta, -data), 1 - data).detach().requires_grad_(True)
    return (data + delta).detach()


def _ce_grad(model, x_of_delta, delta, label, copies=1):
    loss = F.cross_entropy(model(x_of_delta), label.repeat(copies))
    return torch.autograd.grad(loss, delta)[0]


def _reference(method, model, data, label):
    grad = lambda x_fn, copies=1: (lambda delta, m: _ce_grad(model, x_fn(delta, m), delta, label, copies))  # noqa: E731
    if method == "ifgsm":   # gradient/ifgsm.py: the base Attack with decay = 0
        return _ta_loop(model, data, label, grad(lambda d, m: data + d), decay=0.0)
    if method == "mifgsm":  # gradient/mifgsm.py
        return _ta_loop(model, data, label, grad(lambda d, m: data + d))
    if method == "nifgsm":  # gradient/nifgsm.py: transform(x, momentum) = x + α·decay·momentum
        return _ta_loop(model, data, label, grad(lambda d, m: data + d + ALPHA * 1.0 * m))
    if method == "sim":     # input_transformation/sim.py: cat of x/2^i, i < 5, labels repeated
        return _ta_loop(model, data, label, grad(lambda d, m: torch.cat([(data + d) / 2**i for i in range(5)]), 5))
    if method == "tim":     # input_transformation/tim.py: Gaussian 15×15, nsig 3, conv2d padding='same', groups=3
        import numpy as np
        from scipy import stats
        k1 = stats.norm.pdf(np.linspace(-3, 3, 15))
        k = np.outer(k1, k1)
        k = torch.from_numpy(np.expand_dims(np.stack([k / k.sum()] * 3), 1).astype(np.float32))
        base = grad(lambda d, m: data + d)
        return _ta_loop(model, data, label, lambda d, m: F.conv2d(base(d, m), k, stride=1, padding="same", groups=3))
    if method == "gnp_ta":  # gradient/gnp.py: g_p = g1/mean|g1|, g2 at x+δ+r·g_p, (1+β)·g1 + β·g2
        def gnp(delta, m):
            g1 = _ce_grad(model, data + delta, delta, label)
            gp = g1 / g1.abs().mean(dim=(1, 2, 3), keepdim=True)
            g2 = _ce_grad(model, data + delta + 0.01 * gp, delta, label)
            return (1 + 0.8) * g1 + 0.8 * g2
        return _ta_loop(model, data, label, gnp)
    if method == "pgn":     # gradient/pgn.py with beta (ζ) = 0 and num_neighbor = 1
        def pgn(delta, m):
            x_near = data + delta + torch.zeros_like(delta)
            g1 = _ce_grad(model, x_near, delta, label)
            x_next = x_near + ALPHA * (-g1 / g1.abs().mean(dim=(1, 2, 3), keepdim=True))
            g2 = _ce_grad(model, x_next, delta, label)
            return (1 - 0.5) * g1 + 0.5 * g2
        return _ta_loop(model, data, label, pgn)
    raise AssertionError(method)


@pytest.mark.parametrize("method", ["ifgsm", "mifgsm", "nifgsm", "tim", "sim", "gnp_ta", "pgn"])
def test_equals_transferattack_reference(method):
    model = TAModel()
    g = torch.Generator().manual_seed(3)
    data = torch.rand(4, 3, 16, 16, generator=g)   # a power-of-two batch: the mean loss is the sum × 2^-2, exactly
    label = torch.randint(0, 10, (4,), generator=g)
    want = _reference(method, model, data, label)
    kw = {"zeta": 0.0, "n_samples": 1} if method == "pgn" else {}
    got = create_attack(method, model, eps=EPS, steps=T, **kw)(data, label)
    assert (got - want).abs().max() <= 1e-6


# ---------------------------------------------------------------- TransferAttack's pipeline, as settings

def test_transferattack_preprocess_is_its_wrap_model():
    from flatbench.models.hub import IMAGENET_MEAN, load_hub_model

    inc = load_hub_model("torchvision:inception_v3.IMAGENET1K_V1", pretrained=False, preprocess="transferattack")
    assert inc.input_size == 299 and inc.mean.flatten().tolist() == [0.5] * 3 and inc.std.flatten().tolist() == [0.5] * 3
    own = load_hub_model("torchvision:inception_v3.IMAGENET1K_V1", pretrained=False)
    assert own.mean.flatten().tolist() != [0.5] * 3
    rn = load_hub_model("torchvision:resnet18.IMAGENET1K_V1", pretrained=False, preprocess="transferattack")
    assert rn.input_size == 224 and rn.mean.flatten().tolist() == pytest.approx(list(IMAGENET_MEAN))
    vit = load_hub_model("vit_base_patch16_224.augreg2_in21k_ft_in1k", pretrained=False, preprocess="transferattack")
    assert vit.input_size == 224 and vit.mean.flatten().tolist() == pytest.approx([0.5] * 3)  # its timm config
    with pytest.raises(ConfigError, match="preprocess"):
        load_hub_model("resnet18", pretrained=False, preprocess="tf")


def test_truncate_quantize_is_its_save_images():
    import numpy as np

    from flatbench.core.quantize import quantize

    x = torch.tensor([0.0, 0.5, 0.9999, 1.0, 200.6 / 255]).view(1, 1, 1, 5)
    want = (x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)  # save_images
    assert quantize(x, mode="truncate").permute(0, 2, 3, 1).numpy().tolist() == want.tolist()
    assert quantize(x).flatten().tolist() == [0, 128, 255, 255, 201]
