"""RAP's and GRA's official code, as settings of the same parts (issue 34, part 4).

- RAP's official script (github.com/SCLBD/Transfer_attack_RAP, ``rap_attack_new.py``: its ``pgd``)
  finds the inner perturbation by *ascending* cross-entropy on a label of its own, where
  TransferAttack's port (``estimator.inner_loss=reverse``, RAP) *descends* the attack's loss on the
  true label. ``inner_loss=official`` (``method=rap_oc``, RAP-OC) ascends it on the surrogate's
  prediction at the current point, fixed for the inner steps.
- GRA's official code labels every gradient by the surrogate's prediction on the clean image;
  TransferAttack's port by the true label. ``estimator.label_by=clean_prediction``
  (``method=gra_oc``, GRA-OC).

Each is tested equal to a reference written out from that code (read for this test; nothing is
vendored), the random start shared as in test_flat_family.py. At their defaults the new settings
leave every stored cell's id as it was."""

import pytest
import torch
import torch.nn.functional as F


from flatbench import create_attack
from flatbench.attacks.estimators import uniform_noise
from flatbench.core.registry import ConfigError
from helpers import command
from ta_reference import TAModel, TA_EPS, ta_data, ta_gra


def official_rap(model, data, label, *, epoch, lr, transpoint, adv_epsilon, adv_steps, start):
    """rap_attack_new.py, untargeted, MI, no DI/TI/SI: the outer loop with ``pgd`` from ``transpoint`` on,
    its label the surrogate's prediction at X_ori + delta; ``start(t)`` replaces pgd's uniform_."""
    delta = torch.zeros_like(data)
    grad_pre, n = 0, torch.zeros_like(data)
    a = adv_epsilon / adv_steps   # arg.adv_alpha
    for t in range(epoch):
        if t >= transpoint:
            base = (data + delta).detach()
            with torch.no_grad():
                label_pred = model(base).argmax(1)
            lo, hi = (base - adv_epsilon).clamp(0, 1), (base + adv_epsilon).clamp(0, 1)
            p = torch.clamp(base + start(t), 0, 1).detach()
            for _ in range(adv_steps):
                p.requires_grad_(True)
                cost = -1 * F.cross_entropy(model(p), label_pred, reduction="sum")
                g = torch.autograd.grad(cost, p)[0]
                with torch.no_grad():
                    p = torch.max(torch.min(p - a * torch.sign(g), hi), lo)
            n = (p - base).detach()
        d = delta.clone().requires_grad_(True)
        loss = -1 * F.cross_entropy(model(data + d + n), label, reduction="sum")
        grad_c = torch.autograd.grad(loss, d)[0]
        grad_c = grad_c / torch.mean(torch.abs(grad_c), (1, 2, 3), keepdim=True) + 1 * grad_pre
        grad_pre = grad_c
        delta = (delta - lr * torch.sign(grad_c)).clamp(-TA_EPS, TA_EPS)
        delta = (data + delta).clamp(0, 1) - data
    return (data + delta).detach()


def test_rap_oc_equals_the_official_script():
    model, (data, label) = TAModel(), ta_data()
    kw = dict(steps=12, alpha=2 / 255, late_start=4, eps_n=16 / 255, alpha_n=2 / 255, inner_steps=8)
    attack = create_attack("rap_oc", model, eps=TA_EPS, **kw)
    assert attack.label == "RAP-OC" and attack.estimator.inner_loss == "official"
    got = attack(data, label)
    start = lambda t: attack.estimator.start(attack.step_context(0, t), data)  # noqa: E731
    want = official_rap(model, data, label, epoch=12, lr=2 / 255, transpoint=4, adv_epsilon=16 / 255, adv_steps=8,
                        start=start)
    assert (got - want).abs().max() <= 1e-6
    port = create_attack("rap", model, eps=TA_EPS, **kw)
    assert port.label == "RAP" and (port(data, label) - got).abs().max() > 1e-3   # another attack
    # the same part: RAP with the official inner step is RAP-OC whichever way it is asked for
    same = create_attack("rap", model, eps=TA_EPS, inner_loss="official", **kw)
    assert same.label == "RAP-OC" and torch.equal(same(data, label), got)


def test_gra_oc_labels_by_the_clean_prediction():
    model, (data, label) = TAModel(), ta_data()
    with torch.no_grad():
        pred = model(data).argmax(1)
    assert (pred != label).any()          # else the two settings could not differ here
    attack = create_attack("gra_oc", model, eps=TA_EPS, n_samples=6)
    assert attack.label == "GRA-OC"
    got = attack(data, label)
    noise = lambda t, i: uniform_noise(attack.step_context(0, t), data, i, i + 1, 3.5 * TA_EPS, "noise")  # noqa: E731
    want = ta_gra(model, data, pred, epoch=10, alpha=TA_EPS / 10, radius=3.5 * TA_EPS, num_neighbor=6, eta=0.94, noise=noise)
    assert (got - want).abs().max() <= 1e-6
    assert (create_attack("gra", model, eps=TA_EPS, n_samples=6)(data, label) - got).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="label_by"):
        create_attack("gra_oc", model, eps=TA_EPS, n_samples=2, targeted=True)(data, label)


def test_the_new_settings_leave_the_stored_cells_ids_and_show_as_columns():
    p = command(["flatbench", "plan", "-m", "method=gra,rap,gra_oc,rap_oc", "eps=16", "--wide"], timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    ids = {ln.split()[1]: ln.split()[2] for ln in p.stdout.splitlines() if " method=" in ln}
    # main's ids before these settings existed (flatbench plan -m method=gra,rap eps=16 on fb155ae)
    assert ids["method=gra"] == "12f500d1a1cf" and ids["method=rap"] == "1fa357a1c384"
    assert len(set(ids.values())) == 4
    for bad, key in ((dict(inner_loss="x"), "inner_loss"), (dict(label_by="x"), "label_by")):
        with pytest.raises(ConfigError, match=key):
            create_attack("rap" if "inner_loss" in bad else "gra", TAModel(), eps=TA_EPS, **bad)
