"""Surrogates trained flat: digits-cnn-sam and digits-resnet-sam, the plain instance 1's recipe, seed and
initial weights trained with SAM at a large radius; the gradient SAM trains with, the pinned models and
their sidecars, retraining through flatbench-zoo, and a cell crafted on one."""
import copy
import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from flatbench.data import DATASETS
from flatbench.models import TESTBED, load_model
from flatbench.models.testbed import PINNED_DIR, Recipe, accuracy, cache_status, pinned_sidecar
from flatbench.models.testbed.architectures import FLAT, MEAN, SAM_RHO, STD
from flatbench.models.testbed.training import _sam_gradient
from flatbench.models.wrap import Preprocess
from helpers import command, run


def _net():
    torch.manual_seed(0)
    return Preprocess(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8),
                                          torch.nn.ReLU(), torch.nn.Linear(8, 3)), MEAN, STD, name="t")


def test_the_sam_gradient_is_the_gradient_at_the_ascended_weights():
    """After the batch's backward at w, _sam_gradient leaves in every parameter's .grad ∇L(w + ρ·g/‖g‖₂), ‖g‖₂
    over all parameters together; the weights are w again bit for bit, and BatchNorm's running mean and
    variance are those the first forward left. Broken variants tried: each tensor normalised by its own norm (the
    gradients differ), and the second forward updating the running statistics."""
    model, rec, rho = _net(), Recipe(epochs=1, lr=1e-3), 0.3
    model.model.train()
    for p in model.model.parameters():
        p.requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    xb, yb = torch.rand(6, 1, 4, 4, generator=g), torch.randint(0, 3, (6,), generator=g)
    F.cross_entropy(model(xb), yb).backward()
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    grads = [p.grad.clone() for p in model.model.parameters()]
    norm = torch.sqrt(sum((gr ** 2).sum() for gr in grads))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p, gr in zip(twin.model.parameters(), grads):
            p.add_(rho * gr / norm)
            p.grad = None
    twin.model[2].momentum = 0.0
    F.cross_entropy(twin(xb), yb).backward()
    _sam_gradient(model, xb, yb, rec, rho)
    for p, q in zip(model.model.parameters(), twin.model.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items() if "num_batches_tracked" not in k)
    assert model.model[2].momentum == 0.1


def test_the_flat_surrogates_are_pinned_beside_their_plain_twins():
    """digits-cnn-sam and digits-resnet-sam: the plain instance 1's architecture, recipe and seed, trained with
    SAM at SAM_RHO; their sidecars record SAM's radius and base optimizer and the plain model's accuracy,
    and their accuracy is the stored model's. Every other sidecar is as it was (no sam key: the cache
    keys of the plain models did not move)."""
    test = DATASETS.build("digits")
    assert sorted(FLAT) == ["digits-cnn-sam", "digits-resnet-sam"]
    for name in FLAT:
        plain = name[: -len("-sam")]
        meta, ref = pinned_sidecar(name), pinned_sidecar(plain)
        assert meta["sam"] == {"rho": SAM_RHO, "base": "AdamW"} and meta["plain"] == {"name": plain, "test_acc": ref["test_acc"]}
        assert (meta["recipe"], meta["seed"], meta["arch"]) == (ref["recipe"], ref["seed"], ref["arch"])
        assert 95.0 <= meta["test_acc"] < ref["test_acc"]
        assert abs(accuracy(load_model(name), test.floats(), test.labels) - meta["test_acc"]) < 0.01
    for name in TESTBED:
        assert cache_status(name, PINNED_DIR) is None, name
        assert ("sam" in pinned_sidecar(name)) == (name in FLAT)


def test_a_cell_crafts_on_a_flat_surrogate(tmp_path):
    run(["flatbench", "surrogate=digits-cnn-sam", "method=mifgsm", "steps=3", "n_images=8", "targets=digits_small",
         "progress=false", f"hydra.run.dir={tmp_path / 'cell'}"], None, tmp_path)
    df = pd.read_csv(tmp_path / "cell" / "results.csv")
    assert set(df["surrogate"]) == {"digits-cnn-sam"} and (df["role"] != "white-box").all()


@pytest.mark.long
def test_flatbench_zoo_trains_a_flat_surrogate_again(tmp_path):
    """`flatbench-zoo train digits-resnet-sam` trains it for real, within a point of the pinned accuracy, with
    the same sidecar keys."""
    out = tmp_path / "trained"
    p = command(["flatbench-zoo", "train", "digits-resnet-sam", "--out", str(out), "--no-progress"], timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    meta = json.loads((out / "digits-resnet-sam.json").read_text())
    assert abs(meta["test_acc"] - pinned_sidecar("digits-resnet-sam")["test_acc"]) <= 1.0
    assert meta["sam"] == {"rho": SAM_RHO, "base": "AdamW"} and cache_status("digits-resnet-sam", out) is None
