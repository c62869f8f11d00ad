"""RAP, GRA, MEF and ANDA (issue 26): each equal to a reference written out from TransferAttack's
``transferattack/gradient/{rap,gra,mef,anda}.py`` (read for these tests; nothing of it is vendored
and the references share no code with the package). The random ones replay the package's own
draws: each part exposes its noise (``RAP.start``, ``uniform_noise``), and the reference consumes
those numbers where the port calls ``uniform_``."""
import pytest
import torch

from flatbench import create_attack
from flatbench.attacks.estimators import uniform_noise
from flatbench.core.registry import ConfigError
from helpers import run
from ta_reference import TAModel, TA_EPS, ta_anda, ta_data, ta_gaa, ta_gra, ta_mef, ta_rap

# ---------------------------------------------------------------- equality

def test_rap_equals_transferattack():
    model = TAModel()
    data, label = ta_data()
    # The official arguments but T = 12 with the late start at 4 (T = 400 would take minutes here).
    kw = dict(steps=12, alpha=2 / 255, late_start=4, eps_n=16 / 255, alpha_n=2 / 255, inner_steps=8)
    attack = create_attack("rap", model, eps=TA_EPS, **kw)
    got = attack(data, label)
    start = lambda it: attack.estimator.start(attack.step_context(0, it), data)  # noqa: E731
    want = ta_rap(model, data, label, epoch=12, alpha=2 / 255, transpoint=4, epsilon_n=16 / 255, alpha_n=2 / 255,
                  adv_steps=8, start=start)
    assert (got - want).abs().max() <= 1e-6
    # The late start matters: RAP from the first step is another attack.
    assert (create_attack("rap", model, eps=TA_EPS, **{**kw, "late_start": 0})(data, label) - got).abs().max() > 1e-3


def test_gra_equals_transferattack():
    model = TAModel()
    data, label = ta_data()
    attack = create_attack("gra", model, eps=TA_EPS, n_samples=6)
    got = attack(data, label)
    radius = 3.5 * TA_EPS
    noise = lambda t, i: uniform_noise(attack.step_context(0, t), data, i, i + 1, radius, "noise")  # noqa: E731
    want = ta_gra(model, data, label, epoch=10, alpha=TA_EPS / 10, radius=radius, num_neighbor=6, eta=0.94, noise=noise)
    assert (got - want).abs().max() <= 1e-6


def test_mef_equals_transferattack():
    model = TAModel()
    data, label = ta_data()
    attack = create_attack("mef", model, eps=TA_EPS, n_samples=6)
    assert (attack.steps, attack.alpha, attack.optimizer.decay) == (20, 1.6 / 255, 0.5)
    got = attack(data, label)
    noise = lambda t: uniform_noise(attack.step_context(0, t), data, 0, 6, 2.0 * TA_EPS, "noise").view(6, *data.shape)  # noqa: E731
    want = ta_mef(model, data, label, epoch=20, alpha=1.6 / 255, num_neighbor=6, gamma=2.0 * TA_EPS, kesai=0.15 * TA_EPS,
                  inner_decay=0.9, decay=0.5, noise=noise)
    assert (got - want).abs().max() <= 1e-6


def test_anda_equals_transferattack():
    model = TAModel()
    data, label = ta_data(b=1, seed=5)
    got = create_attack("anda", model, eps=TA_EPS)(data, label)
    want = ta_anda(model, data, label, epoch=10, alpha=TA_EPS / 10, n_ens=25, aug_max=0.3)
    assert (got - want).abs().max() <= 1e-6
    # Each image of a batch keeps its own statistics: a batch crafts what one image at a time does.
    batch, labels = ta_data(b=4, seed=6)
    attack = create_attack("anda", model, eps=TA_EPS)
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
        attack = create_attack(method, small_cnn, eps=TA_EPS, **kw)
        assert attack.label == label
        a, b = attack(x, y, seed=1), attack(x, y, seed=1)
        assert torch.equal(a, b), method   # the same images for the same seed
        assert (a - x).abs().max() <= TA_EPS + 1e-6 and a.min() >= 0 and a.max() <= 1
        assert not torch.equal(a, attack(x, y, seed=2)), method   # each case draws noise (ANDA through DIM)


def test_family_settings_fail_with_the_key_and_the_range():
    for method, kw, key in (("anda", {"n_views": 24}, "estimator.n_views=24"), ("gra", {"eta": 0}, "optimizer.eta=0 "),
                            ("rap", {"inner_steps": 0}, "estimator.inner_steps=0"), ("mef", {"xi": -1.0}, "estimator.xi=-1 ")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            create_attack(method, torch.nn.Identity(), eps=TA_EPS, **kw)


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
    one = create_attack("gra", small_cnn, eps=TA_EPS, n_samples=2, eta=1.0)(x, y)
    assert torch.equal(one, create_attack("gra", small_cnn, eps=TA_EPS, n_samples=2, optimizer="mifgsm")(x, y))
    assert not torch.equal(one, create_attack("gra", small_cnn, eps=TA_EPS, n_samples=2)(x, y))


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_family_cells_from_the_command_line(trained_zoo, zoo_dir, tmp_path):
    import pandas as pd


    sweep = tmp_path / "sweep"
    common = ["n_images=8", "targets=digits_small", "progress=false"]
    run(["flatbench", "-m", "method=gra,mef,anda,emifgsm", "steps=3", *common, f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    run(["flatbench", "method=rap", "steps=3", "estimator.late_start=1", "estimator.inner_steps=2", *common,
         f"hydra.run.dir={sweep / 'rap'}"], zoo_dir, tmp_path)
    run(["flatbench", "method=cwa", "surrogate=[digits-cnn,digits-mlp]", "steps=2", *common,
         f"hydra.run.dir={sweep / 'cwa'}"], zoo_dir, tmp_path)
    df = pd.concat(pd.read_csv(f) for f in sweep.glob("*/results.csv")).drop_duplicates("cell_id").set_index("attack")
    assert sorted(df.index) == ["ANDA", "CWA", "EMI-FGSM", "GRA", "MEF", "RAP"]
    assert (df.loc["CWA", "surrogate"], df.loc["CWA", "estimator.members"]) == ("digits-cnn+digits-mlp", 2)
    assert (df.loc["EMI-FGSM", "estimator.radius"], df.loc["EMI-FGSM", "estimator.sampling"]) == (7.0, "linear")
    assert df.loc["GRA", "optimizer"] == "gra_momentum" and df.loc["GRA", "optimizer.eta"] == 0.94
    assert df.loc["GRA", "zeta"] == 3.5 and df.loc["GRA", "n_samples"] == 20       # the bare columns: same meaning
    # The presets' lengths are rules of eps (flatbench/attacks/scaling.py): at the digits eps of 32/255, MEF's
    # alpha = eps/10 and RAP's alpha = eps/8, eps_n = eps, alpha_n = eps/8.
    assert df.loc["MEF", "estimator.xi"] == 0.15 and df.loc["MEF", "decay"] == 0.5 and df.loc["MEF", "alpha"] == 3.2
    assert df.loc["RAP", "estimator.eps_n"] == 32 and df.loc["RAP", "estimator.alpha_n"] == 4 and df.loc["RAP", "alpha"] == 4
    assert df.loc["ANDA", "estimator.n_views"] == 25 and df.loc["ANDA", "optimizer"] == "ifgsm"
    # grad_evals: GRA 3·(1+20), MEF 3·20, ANDA 3·25, EMI 3·11, RAP 1 + 2·(2+1), CWA 2·(2+2) per image (single-model
    # passes: its ensemble gradient is 2, each of its 2 member gradients 1).
    assert df["grad_evals"].to_dict() == {"GRA": 8 * 63, "MEF": 8 * 60, "ANDA": 8 * 75, "EMI-FGSM": 8 * 33, "RAP": 8 * 7,
                                          "CWA": 8 * 2 * 4}


# ---------------------------------------------------------------- issue 37: EMI-FGSM

def test_emifgsm_equals_transferattack_bit_for_bit():
    """Linear sampling, the official arguments (N = 11, radius 7, T = 10, α = ε/T, μ = 1): the 8-bit
    images flatbench stores are the port's bit for bit. In float32 they agree to one ulp: the loop
    projects with (x + clip(δ)).clamp(0, 1) − x where the port clamps δ twice, and plain MI-FGSM
    differs from the port by the same ulp. Broken variant tried: the direction d normalised by its
    L2 norm instead of mean|ḡ| (the points 7·α·d land elsewhere)."""
    from ta_reference import ta_emifgsm

    model = TAModel()
    data, label = ta_data()
    got = create_attack("emifgsm", model, eps=TA_EPS)(data, label)
    want = ta_emifgsm(model, data, label, epoch=10, alpha=TA_EPS / 10, decay=1.0, num_sample=11, radius=7)
    assert (got - want).abs().max() <= 1.2e-7
    assert torch.equal((got * 255).round(), (want * 255).round())
    # The sampling matters: at radius 0 every point is x, and EMI-FGSM is MI-FGSM.
    mi = create_attack("mifgsm", model, eps=TA_EPS)(data, label)
    assert torch.equal(create_attack("emifgsm", model, eps=TA_EPS, radius=0.0)(data, label), mi)
    assert not torch.equal(got, mi)


def test_emifgsm_sampling_is_keyed_and_chunk_free():
    model = TAModel()
    data, label = ta_data()
    for sampling in ("uniform", "gaussian"):
        a = create_attack("emifgsm", model, eps=TA_EPS, sampling=sampling, chunk=4 * 3)(data, label, seed=1)
        b = create_attack("emifgsm", model, eps=TA_EPS, sampling=sampling, chunk=None)(data, label, seed=1)
        assert (a - b).abs().max() <= 1e-6, sampling
        assert (a - data).abs().max() <= TA_EPS + 1e-6 and a.min() >= 0 and a.max() <= 1
    lin = create_attack("emifgsm", model, eps=TA_EPS)(data, label)
    assert not torch.equal(create_attack("emifgsm", model, eps=TA_EPS, sampling="uniform")(data, label, seed=1), lin)
    attack = create_attack("emifgsm", model, eps=TA_EPS, n_samples=5)
    attack(data, label)
    assert attack.grad_evals == attack.predicted_grad_evals(len(data)) == 10 * 5 * len(data)


# ---------------------------------------------------------------- issue 37: BSR and SIA

def _plans(attack, data, t):
    """Step t's draws of the attack's one input transform, from the generator the loop hands it."""
    (tf,) = attack.transforms
    gen = attack.step_context(0, t).rng("tf", "g")
    return [tf.draw(data.shape, gen, data.device) for _ in range(tf.copies)]


@pytest.mark.parametrize("method", ["bsr", "sia"])
def test_bsr_and_sia_equal_transferattack_with_the_draws_shared(method):
    """20 copies of 3×3 blocks, T = 10, α = ε/T, μ = 1; the reference, written out from
    input_transformation/{bsr,sia}.py, consumes the transform's own draws where the port calls numpy's,
    random's and torch's generators. Broken variants tried: BSR rotating each strip by the negated angle;
    SIA's horizontal shift rolling along dim 2."""
    from ta_reference_views import ta_bsr, ta_sia

    model = TAModel()
    data, label = ta_data()
    attack = create_attack(method, model, eps=TA_EPS)
    assert attack.copies == 20
    got = attack(data, label)
    reference = {"bsr": ta_bsr, "sia": ta_sia}[method]
    want = reference(model, data, label, epoch=10, alpha=TA_EPS / 10, decay=1.0, num_scale=20,
                     plans=lambda t: _plans(attack, data, t))
    assert (got - want).abs().max() <= 1.2e-7
    assert torch.equal((got * 255).round(), (want * 255).round())
    assert attack.grad_evals == attack.predicted_grad_evals(len(data)) == 10 * 20 * len(data)


def test_bsr_and_sia_views_are_rearrangements_and_keyed():
    """BSR's unrotated copy is a permutation of the image's blocks (to 2.4e-7: torchvision's rotate by 0°
    still resamples on its grid); a SIA copy without scale or noise keeps every pixel value; the same
    key draws the same views."""
    from flatbench.attacks.transforms import BSR, SIA

    x = torch.rand(2, 3, 16, 16)
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    b = BSR(num_copies=3, max_angle=0.0)
    v = b(x, gen())
    assert v.shape == (6, 3, 16, 16) and torch.equal(v, b(x, gen()))
    for k in range(3):
        assert (v[2 * k:2 * k + 2].flatten(1).sort(1).values - x.flatten(1).sort(1).values).abs().max() <= 3e-7
    assert not torch.equal(v[:2], x)
    s = SIA(num_copies=4)
    plans = [s.draw(x.shape, gen(), "cpu") for _ in range(1)]
    rows, cols, blocks = plans[0]
    assert rows[0] == 0 and rows[-1] == 16 and len(set(rows)) == 4 and len(blocks) == 9
    kept = [[r, c, [(op, a) if op not in ("scale", "add_noise") else ("vertical_flip", None) for op, a in blocks]]
            for r, c, _ in [plans[0]]][0]
    z = s.apply(x, kept)
    assert torch.equal(z.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    with pytest.raises(ConfigError, match=r"transforms\.sia\.num_block=20 is out of range"):
        SIA(num_block=20)(x, gen())


def test_bsr_composes_with_every_estimator_and_keeps_the_ball(small_cnn):
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for method in ("pgn_bsr", "mef_sia"):
        a = create_attack(method, small_cnn, eps=8 / 255, steps=2, n_samples=2)
        adv = a(x, y)
        assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert a.grad_evals == a.predicted_grad_evals(4)


# ---------------------------------------------------------------- issue 37: CWA

class _PooledNet(torch.nn.Module):
    """A member at another resolution than the images (global pooling), with its own preprocessing."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(11)
        self.c = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3
            p.requires_grad_(False)

    def forward(self, x):
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.c(x)), 4).flatten(1))


def _cwa_members():
    from flatbench.models import Preprocess

    return [TAModel(seed=7), TAModel(seed=8),
            Preprocess(_PooledNet(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 24, "bilinear", name="pooled")]


def test_cwa_equals_transferattack_one_image_at_a_time():
    """The official arguments (α = 2ε/T, r = ε/15, inner step 250, T = 10, μ = 1) over three members,
    one of them with its own resize and mean/std. The port normalises the outer update by the whole
    batch's L1 norm; here by each image's, so a batch crafts what one image at a time does, and one
    image at a time is the port (the port's own batch of four differs from it in 8 pixels). Broken
    variant tried: the inner momentum reset at every step."""
    from flatbench.models import Ensemble
    from ta_reference_views import ta_cwa

    members = _cwa_members()
    data, label = ta_data()
    attack = create_attack("cwa", Ensemble(members), eps=TA_EPS)
    assert (attack.alpha, attack.estimator.r, attack.estimator.members) == (pytest.approx(2 * TA_EPS / 10), pytest.approx(TA_EPS / 15), 3)
    got = attack(data, label)
    want = torch.cat([ta_cwa(members, data[i:i + 1], label[i:i + 1], epoch=10, alpha=2 * TA_EPS / 10, epsilon=TA_EPS,
                             decay=1.0, r_size=TA_EPS / 15, inner_step_size=250) for i in range(len(data))])
    assert (got - want).abs().max() <= 1.2e-7
    assert torch.equal((got * 255).round(), (want * 255).round())
    # a step: the ensemble's gradient (3 single-model passes) and each member's (1 each)
    assert attack.grad_evals == attack.predicted_grad_evals(len(data)) == 10 * (3 + 3) * len(data)
    batched = ta_cwa(members, data, label, epoch=10, alpha=2 * TA_EPS / 10, epsilon=TA_EPS, decay=1.0,
                     r_size=TA_EPS / 15, inner_step_size=250)
    assert not torch.equal((batched * 255).round(), (want * 255).round())   # the port's batch is another attack
    assert (got - data).abs().max() <= TA_EPS + 1e-6 and got.min() >= 0 and got.max() <= 1


def test_cwa_needs_an_ensemble():
    with pytest.raises(ConfigError, match="CWA needs an ensemble surrogate of two or more models"):
        create_attack("cwa", TAModel(), eps=TA_EPS)(*ta_data())
    from flatbench.models import Ensemble

    with pytest.raises(ConfigError, match=r"estimator.members=3 but the surrogate ensemble has 2 models"):
        create_attack("cwa", Ensemble(_cwa_members()[:2]), eps=TA_EPS, members=3)(*ta_data())


# ---------------------------------------------------------------- CWA's baselines: the members' gradients averaged

def _members_reference(members, data, label, normalize, epoch=10, decay=1.0):
    """MI-FGSM (TransferAttack's momentum and update) on the mean over members of each member's own
    gradient, written out from the formula: (1/K)·Σ_k ∇CE(m_k(x), y), each divided by its own L1 norm
    per image when normalize is 'l1'."""
    from ta_reference import ta_momentum, ta_update_delta
    delta = torch.zeros_like(data, requires_grad=True)
    momentum = 0
    for _ in range(epoch):
        grads = []
        for m in members:
            g = torch.autograd.grad(torch.nn.functional.cross_entropy(m(data + delta), label), delta)[0]
            if normalize == "l1":
                g = g / g.abs().sum(dim=(1, 2, 3), keepdim=True)
            grads.append(g)
        grad = torch.stack(grads).mean(0)
        momentum = ta_momentum(grad, momentum, decay)
        delta = ta_update_delta(delta, data, momentum, TA_EPS / epoch)
    return (data + delta).detach()


@pytest.mark.parametrize("method,normalize,label", [("ens_loss", "none", "MI-FGSM+EnsLoss"),
                                                    ("ens_l1", "l1", "MI-FGSM+EnsL1")])
def test_member_mean_baselines_equal_their_formula(method, normalize, label):
    """MI-FGSM on the mean of the members' losses, and on the mean of their L1-normalised gradients,
    over three members (one with its own resize and mean/std); K passes a step, as the logit ensemble.
    Broken variant tried: the L1 norm taken over the whole batch instead of per image (fails ens_l1)."""
    from flatbench.models import Ensemble

    members = _cwa_members()
    data, label_ = ta_data()
    attack = create_attack(method, Ensemble(members), eps=TA_EPS)
    assert attack.label == label and attack.estimator.members == 3
    got = attack(data, label_)
    want = _members_reference(members, data, label_, normalize)
    assert torch.equal((got * 255).round(), (want * 255).round())
    assert attack.grad_evals == attack.predicted_grad_evals(len(data)) == 10 * 3 * len(data)
    logits = create_attack("mifgsm", Ensemble(members), eps=TA_EPS)
    logits(data, label_)
    assert logits.grad_evals == attack.grad_evals   # the same cost as the logit-averaged ensemble
    assert (got - data).abs().max() <= TA_EPS + 1e-6 and got.min() >= 0 and got.max() <= 1
    with pytest.raises(ConfigError, match="needs an ensemble surrogate"):
        create_attack(method, TAModel(), eps=TA_EPS)(data, label_)


# ---------------------------------------------------------------- GAA

def _ta_gaa(model, data, label, n, noise, **kw):
    return ta_gaa(model, data, label, epoch=10, epsilon=TA_EPS, decay=1.0, rho=kw.pop("rho", 1.6 / 255),
                  lambda_param=0.2, N=n, noise=noise, **kw)


def test_gaa_ta_equals_transferattack_with_xi_zero_and_under_its_draws():
    """GAA-TA is gradient/gaa.py as it runs (ĝ counted twice, ξ = 3.5·ε, ρ = 1.6/255 at ε = 16/255,
    α = ε/T, μ = 1): with ξ = 0 (no draws) and with the port's uniform draws replaced by the package's
    keyed ones, the 8-bit images are the port's. Broken variant tried: x' not clipped to [0, 1]
    (the draws case moves; at ξ = 0 nothing leaves the box)."""
    model, (data, label) = TAModel(), ta_data()
    zero = create_attack("gaa_ta", model, eps=TA_EPS, zeta=0.0, n_samples=2)
    assert (zero.estimator.r, zero.estimator.zeta, zero.label) == (pytest.approx(1.6 / 255), 0.0, "GAA-TA")
    got = zero(data, label)
    want = _ta_gaa(model, data, label, 2, lambda t, i: torch.zeros_like(data))
    assert (got - want).abs().max() <= 1.2e-7 and torch.equal((got * 255).round(), (want * 255).round())
    attack = create_attack("gaa_ta", model, eps=TA_EPS, n_samples=3)
    got = attack(data, label)
    noise = lambda t, i: uniform_noise(attack.step_context(0, t), data, i, i + 1, 3.5 * TA_EPS, "noise")  # noqa: E731
    want = _ta_gaa(model, data, label, 3, noise)
    assert (got - want).abs().max() <= 1.2e-7 and torch.equal((got * 255).round(), (want * 255).round())
    assert attack.grad_evals == attack.predicted_grad_evals(len(data)) == 10 * 2 * 3 * len(data)


def test_gaa_is_the_aggregation_without_the_second_g_hat_and_the_forms_part_only_at_a_long_look_ahead():
    """``gaa`` is the port's loop with (1−λ)·g' + (1+λ)·ĝ. At the official ρ = 1.6/255 the L1 look-ahead
    moves each of the d pixels by about ρ/d, so ĝ ≈ g' and the two forms give the same images here; at
    ρ = 1 (the whole range, in L1) they part. Broken variant tried: gaa built with TransferAttack's weights."""
    model, (data, label) = TAModel(), ta_data()
    zero = lambda t, i: torch.zeros_like(data)  # noqa: E731
    paper = create_attack("gaa", model, eps=TA_EPS, zeta=0.0, n_samples=1, r=1.0)(data, label)
    want = _ta_gaa(model, data, label, 1, zero, rho=1.0, twice=False)
    assert (paper - want).abs().max() <= 1.2e-7
    port = create_attack("gaa_ta", model, eps=TA_EPS, zeta=0.0, n_samples=1, r=1.0)(data, label)
    assert ((paper - port).abs() > 1e-6).sum() > 10
    assert torch.equal(create_attack("gaa", model, eps=TA_EPS, zeta=0.0, n_samples=1)(data, label),
                       create_attack("gaa_ta", model, eps=TA_EPS, zeta=0.0, n_samples=1)(data, label))


def test_gaa_from_the_command_line_scales_rho_with_eps(trained_zoo, zoo_dir, tmp_path):
    """method=gaa_ta runs as a cell: its settings are columns (ρ is ``r`` and ξ ``zeta``, as PGN's look-ahead and
    neighbourhood), ρ follows ε (eps/10), and it keeps the ball."""
    import pandas as pd

    for method in ("gaa", "gaa_ta"):
        run(["flatbench", "-m", f"method={method}", "eps=8,16", "estimator.n_samples=2", "steps=3", "n_images=8",
             "targets=digits_small", "progress=false", f"hydra.sweep.dir={tmp_path / method}"], zoo_dir, tmp_path)
    df = pd.concat(pd.read_csv(f) for f in tmp_path.glob("gaa*/*/results.csv")).drop_duplicates("cell_id")
    assert sorted(set(df["attack"])) == ["GAA", "GAA-TA"] and df["cell_id"].nunique() == 4
    assert (df["r"] == df["eps"] / 10).all() and (df["zeta"] == 3.5).all()
    assert (df["estimator.lam"] == 0.2).all() and (df["n_samples"] == 2).all()
    assert df.groupby("attack")["estimator.aggregation"].first().to_dict() == {"GAA": "paper", "GAA-TA": "transferattack"}
    assert (df["grad_evals"] == 8 * 3 * 2 * 2).all()
    assert (df["linf_mean"] <= df["eps"] + 1e-6).all()   # 1/255 units


# ---------------------------------------------------------------- FGSRA

@pytest.mark.parametrize("kw", [{"zeta": 0.0, "mask_range": 0.0, "n_samples": 2}, {"n_samples": 3}],
                         ids=["no-draws", "draws-replayed"])
def test_fgsra_equals_transferattack(kw):
    """FGSRA is gradient/fgsra.py (N = 20, β = 2ε, ρ = 0.7, the decay indicator against the step's gradient,
    α = ε/T): with no draws and with the port's draws (the noise and the frequency mask) replaced by the
    package's keyed ones, the 8-bit images are the port's; its DCT by FFT and the matrices here are the
    same maps. Broken variants tried: the indicator comparing with the previous momentum (GRA's), and
    the neighbours unweighted by their cosine with x."""
    from ta_reference_views import ta_fgsra

    model, (data, label) = TAModel(), ta_data()
    attack = create_attack("fgsra", model, eps=TA_EPS, **kw)
    assert attack.label == "FGSRA" and attack.optimizer.indicator == "gradient"
    got = attack(data, label)
    zeta, width = attack.estimator.zeta, attack.estimator.mask_range

    def draws(t, i):
        ctx = attack.step_context(0, t)
        return (uniform_noise(ctx, data, i, i + 1, zeta * TA_EPS, "noise"),
                1 + uniform_noise(ctx, data, i, i + 1, width, "mask"))

    want = ta_fgsra(model, data, label, epoch=10, alpha=TA_EPS / 10, N=kw["n_samples"], draws=draws)
    assert (got - want).abs().max() <= 3e-7 and torch.equal((got * 255).round(), (want * 255).round())
    assert attack.grad_evals == attack.predicted_grad_evals(len(data)) == 10 * (1 + kw["n_samples"]) * len(data)


def test_fgsra_frequency_view_is_the_identity_without_a_mask_and_refuses_targeted():
    from flatbench.attacks.estimators.fgsra import frequency_view

    x = torch.rand(2, 3, 8, 12, dtype=torch.float64)
    torch.testing.assert_close(frequency_view(x, torch.zeros_like(x), torch.ones_like(x)), x)
    masked = frequency_view(x, torch.zeros_like(x), torch.full_like(x, 0.5))
    torch.testing.assert_close(masked, x / 2)   # a constant mask scales the image: the map is linear
    with pytest.raises(ConfigError, match="untargeted only"):
        create_attack("fgsra", TAModel(), eps=TA_EPS, targeted=True)
