"""The API leaves a user's model as it found it (issue 23, section 1).

``create_attack(...)(x, y)`` runs the attack with the model in eval mode and hands it back with
every submodule's mode, every parameter's ``requires_grad``, its weights and statistics (bit for
bit), its memory format, its device and its attributes as they were, also when the attack raises,
for ensembles, ``torch.compile``d models, and the measurement that picks chunk and format.
"""
import subprocess
import sys
import pytest
import torch
import torch.nn as nn
import torch.utils.deterministic

from flatbench import create_attack
from flatbench.models.wrap import Ensemble


def conv_bn_dropout(seed: int = 0) -> nn.Module:
    """The issue's model, straight after construction (training mode)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 5))


def snapshot(model: nn.Module) -> dict:
    """Everything the attack must leave alone, by value."""
    return {
        "modes": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "strides": {n: p.stride() for n, p in model.named_parameters()},
        "devices": {n: p.device for n, p in model.named_parameters()},
        "attrs": {n: sorted(vars(m)) for n, m in model.named_modules()},
        "grads": {n: p.grad for n, p in model.named_parameters()},
    }


def assert_same(before: dict, model: nn.Module) -> None:
    after = snapshot(model)
    assert after["modes"] == before["modes"], "a submodule's train/eval mode changed"
    assert after["requires_grad"] == before["requires_grad"], "a parameter's requires_grad changed"
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), f"{k} changed (weights or running statistics)"
    assert after["strides"] == before["strides"], "a parameter's memory format changed"
    assert after["devices"] == before["devices"]
    assert after["attrs"] == before["attrs"], "an attribute was added to or removed from a module"
    assert all(g is None for g in after["grads"].values()), "a parameter's .grad was written"


def data(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("method", ["mifgsm", "pgn"])
def test_training_mode_model_is_attacked_in_eval_and_handed_back(method):
    model = conv_bn_dropout()
    x, y = data()
    before = snapshot(model)
    kw = {"n_samples": 2} if method == "pgn" else {}
    a = create_attack(method, model, eps=16 / 255, steps=5, **kw)
    x1, x2 = a(x, y), a(x, y)
    assert_same(before, model)
    assert model.training
    # Eval mode: dropout is off, so the attack is deterministic, and it is the attack on the
    # eval-mode model (the same images as attacking a copy put in eval mode by hand).
    assert torch.equal(x1, x2)
    ref = conv_bn_dropout().eval()
    assert torch.equal(create_attack(method, ref, eps=16 / 255, steps=5, **kw)(x, y), x1)


def test_mixed_modes_and_requires_grad_are_restored_module_by_module():
    model = conv_bn_dropout()
    model[1].eval()                       # a frozen BatchNorm inside a training model
    model[0].weight.requires_grad_(False)  # a partly frozen model
    before = snapshot(model)
    create_attack("ifgsm", model, eps=8 / 255, steps=2)(*data())
    assert_same(before, model)
    assert model[1].training is False and model[5].training is True


def test_model_is_handed_back_when_the_attack_raises():
    model = conv_bn_dropout()
    before = snapshot(model)

    def bad_loss(out, y):
        raise RuntimeError("user loss failed")

    with pytest.raises(RuntimeError, match="user loss failed"):
        create_attack("mifgsm", model, eps=8 / 255, steps=2, loss=bad_loss)(*data())
    assert_same(before, model)


def test_measurement_never_leaves_channels_last_or_flags(tmp_path):
    """The timed measurement (chunk=measure, channels_last=measure) converts the weights to
    try both formats; whatever it picks, the user's model comes back contiguous and unflagged."""
    model = conv_bn_dropout()
    before = snapshot(model)
    a = create_attack("pgn", model, eps=16 / 255, steps=2, n_samples=2, chunk="measure", channels_last="measure",
                      tuning_file=tmp_path / "t.json")
    a(*data())
    assert_same(before, model)
    # Forced channels_last: the attack runs in it, the model comes back as it was.
    a = create_attack("mifgsm", model, eps=16 / 255, steps=2, channels_last=True)
    a(*data())
    assert a.memory_format == "channels_last"
    assert_same(before, model)


def test_channels_last_model_stays_channels_last():
    model = conv_bn_dropout().to(memory_format=torch.channels_last)
    before = snapshot(model)
    create_attack("mifgsm", model, eps=16 / 255, steps=2, channels_last=False)(*data())
    assert_same(before, model)


def test_ensemble_members_are_handed_back():
    members = [conv_bn_dropout(0), conv_bn_dropout(1)]
    members[1].eval()
    ens = Ensemble(members)
    before = snapshot(ens)
    x, y = data()
    a = create_attack("mifgsm", ens, eps=16 / 255, steps=3)
    assert torch.equal(a(x, y), a(x, y))
    assert_same(before, ens)


def test_compiled_model_is_handed_back():
    model = conv_bn_dropout()
    compiled = torch.compile(model, backend="eager")  # the wrapper without a compiler's cost
    before = snapshot(model)
    x, y = data()
    a = create_attack("mifgsm", compiled, eps=16 / 255, steps=3)
    assert torch.equal(a(x, y), a(x, y))
    assert compiled.training and model.training
    assert_same(before, model)


def test_timm_resnet_in_training_mode():
    """Issue 23: a timm ResNet-18 in training mode raised BatchNorm's 'Expected more than 1 value
    per channel when training' from the chunk measurement's one-image forward."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    model.train()
    before = snapshot(model)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32, generator=g), torch.tensor([1, 2])
    a = create_attack("mifgsm", model, eps=16 / 255, steps=2)
    x_adv = a(x, y)
    assert (x_adv - x).abs().max() <= 16 / 255 + 1e-6
    assert_same(before, model)


class Spy(nn.Module):
    """conv_bn_dropout() that calls ``record()`` at every forward: what the attack's global
    settings are while it runs."""

    def __init__(self, record):
        super().__init__()
        self.net = conv_bn_dropout()
        self.record = record

    def forward(self, x):
        self.record()
        return self.net(x)


@pytest.mark.parametrize("strict", [False, True])
def test_global_determinism_flags_are_set_for_the_call_and_restored(strict):
    """The attack runs with cuDNN's and PyTorch's deterministic kernels (GPU sets repeat bit for
    bit; see model_state.deterministic_kernels) and leaves the caller's global flags as they were."""
    seen = []
    spy = Spy(lambda: seen.append((torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
                                   torch.utils.deterministic.fill_uninitialized_memory)))

    before = (torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(strict)
    try:
        create_attack("mifgsm", spy, eps=8 / 255, steps=2)(*data())
        assert seen and all(s == (True, True, strict) for s in seen)   # no NaN fill unless the caller had it on
        assert torch.backends.cudnn.deterministic is False
        assert torch.are_deterministic_algorithms_enabled() is strict
        assert torch.is_deterministic_algorithms_warn_only_enabled() is False
        assert torch.utils.deterministic.fill_uninitialized_memory is True
    finally:
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])
        torch.backends.cudnn.deterministic = before[0]


def test_an_attack_call_does_not_import_the_compiler():
    """torch.use_deterministic_algorithms imports torch._inductor (and with it torch._dynamo) to
    set inductor's flag: about 1 s, which a fresh process paid inside its first attack call, 11% of
    the command line's default PGN cell (issue 25). Without torch.compile in play the attack sets
    the kernels' flag alone; the flags seen inside the call are the same."""
    code = ("import sys, torch\n"
            "from flatbench import create_attack\n"
            "net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))\n"
            "net(torch.rand(1, 3, 8, 8)); net.eval()\n"
            "seen = []\n"
            "net.register_forward_pre_hook(lambda m, a: seen.append(torch.are_deterministic_algorithms_enabled()))\n"
            "create_attack('pgn', net, eps=8 / 255, steps=2, n_samples=2)(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))\n"
            "assert seen and all(seen), seen\n"
            "assert not torch.are_deterministic_algorithms_enabled()\n"
            "print(sorted(m for m in sys.modules if m.startswith(('torch._inductor', 'torch._dynamo'))))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "[]", p.stdout[:500]


def test_with_the_compiler_loaded_inductor_is_deterministic_inside_the_call():
    """Where torch._dynamo is loaded (torch.compile, compile=true), inductor's own flag is set for
    the call as torch.use_deterministic_algorithms sets it, and restored after."""
    import torch._dynamo  # noqa: F401 - what torch.compile loads
    import torch._inductor.config as inductor_config

    seen = []
    before = inductor_config.deterministic
    create_attack("mifgsm", Spy(lambda: seen.append(inductor_config.deterministic)), eps=8 / 255, steps=2)(*data())
    assert seen and all(seen)
    assert inductor_config.deterministic is before
