"""What the tests share, in one module (no test module imports another): the command-line runner and
the environment it runs in, Hydra composition, the report's entry function in-process, generated image
trees, the analytic models with known gradients and Hessians, and references written out from
TransferAttack's public code (read for these tests; nothing of it is vendored, and the references share
no code with the package)."""
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from flatbench.attacks import Attack, Penalty
from flatbench.compose import CONFIG_DIR
from flatbench.config import register_schema

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the command line

def zoo_env(zoo_dir) -> dict:
    """The environment that selects ``zoo_dir``'s weights in a subprocess (none: the pinned ones)."""
    return {} if zoo_dir is None else {"FLATBENCH_ZOO": str(zoo_dir)}


BIN = Path(sys.executable).parent


def command(args, zoo_dir=None, cwd=None, extra_env=None, timeout=600) -> subprocess.CompletedProcess:
    """One of the package's commands (``args[0]``: flatbench, flatbench-report, ...), its output captured;
    the one runner the tests share. W&B stays offline."""
    env = dict(os.environ, **zoo_env(zoo_dir), WANDB_MODE="offline", **(extra_env or {}))
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run(args, zoo_dir, cwd, extra_env=None, timeout=600):
    """:func:`command`, which must succeed."""
    p = command(args, zoo_dir, cwd, extra_env, timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def fails(args, cwd, extra_env=None, rc=1) -> str:
    """Run a command that must fail with exit code ``rc``; its stderr, which must be one line (no traceback)."""
    p = command(args, None, cwd, extra_env)
    assert p.returncode == rc, (p.returncode, p.stdout[-2000:] + p.stderr[-3000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "][flatbench][" not in ln]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    return lines[0]


SMALL = ["n_images=8", "targets=digits_small", "progress=false"]


def compose_config(overrides, hydra=False):
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


def report_main(argv, capsys):
    """flatbench-report's entry function in this process (the console script calls the same
    main; nine process starts would cost this test 15 s): (exit code, stderr)."""
    from flatbench.report import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    return rc or 0, capsys.readouterr().err


# ---------------------------------------------------------------- generated images

def write_png(path: Path, seed: int, size: int = 40) -> Path:
    """A smooth random RGB image (not noise, so JPEG and median filters act as on photos)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


SYNSETS = {0: "n01440764", 1: "n02123045", 2: "n04591713"}
SYNSET_LABELS = {"n01440764": 0, "n02123045": 281, "n04591713": 907}


def make_layouts(root: Path, n: int = 6) -> dict:
    """Tiny NIPS17, TransferAttack and ImageFolder trees of generated PNGs."""
    nips = root / "nips17"
    rows = ["ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,Pretrained"]
    for i in range(n):
        write_png(nips / "images" / f"img{i:03d}.png", i)
        rows.append(f"img{i:03d},u,0,0,1,1,{1 + 37 * i},{500 + i},1")
    (nips / "images.csv").write_text("\n".join(rows) + "\n")
    ta = root / "transferattack"
    rows = ["filename,label,targeted_label"]
    for i in range(n):
        write_png(ta / "images" / f"{i}.png", 100 + i)
        rows.append(f"{i}.png,{37 * i},{900 - i}")
    (ta / "labels.csv").write_text("\n".join(rows) + "\n")
    folder = root / "imagenet_val"
    for i in range(n):   # three ImageNet-1k synsets: tench (0), tabby cat (281), wine bottle (907)
        write_png(folder / SYNSETS[i % 3] / f"ILSVRC_{i}.png", 200 + i, size=50)
    return {"nips17": nips, "transferattack": ta, "imagefolder": folder, "root": root}


# ---------------------------------------------------------------- analytic models

class Quadratic(torch.nn.Module):
    """ℓ(x) = ½ xᵀAx + bᵀx per example, returned as a 1-column output; A symmetric."""

    def __init__(self, d, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        m = torch.randn(d, d, generator=g, dtype=torch.float64)
        self.A = (m + m.T) / 2
        self.b = torch.randn(d, generator=g, dtype=torch.float64)

    def forward(self, x):
        z = x.flatten(1).double()
        return (0.5 * ((z @ self.A) * z).sum(1) + z @ self.b).unsqueeze(1)

    def grad(self, x):
        return (x.flatten(1).double() @ self.A + self.b).view_as(x)


def _sum_loss(out, y):
    return out.sum()


def estimate(penalty: Penalty, model, x, alpha=0.01):
    attack = Attack(model, eps=0.1, steps=1, alpha=alpha, estimator=penalty, loss=_sum_loss)
    ctx = attack.step_context(seed=0, step=0)
    return penalty(ctx, x.double(), torch.zeros(len(x), dtype=torch.long))


class SinSquare(torch.nn.Module):
    """ℓ = Σ sin(x)·x², whose gradient and (diagonal) Hessian are known in closed form."""

    def forward(self, x):
        z = x.flatten(1).double()
        return (torch.sin(z) * z**2).sum(1, keepdim=True)

    @staticmethod
    def grad_and_hessian(x):
        return (torch.cos(x) * x**2 + 2 * x * torch.sin(x),
                -torch.sin(x) * x**2 + 4 * x * torch.cos(x) + 2 * torch.sin(x))


# ---------------------------------------------------------------- TransferAttack's code, written out

class TAModel(torch.nn.Module):
    """A random-init conv net (deterministic on CPU) standing in for a surrogate."""

    def __init__(self, seed=7):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3
            p.requires_grad_(False)

    def forward(self, x):
        return self.fc(F.relu(self.c2(F.relu(self.c1(x)))).flatten(1))


TA_EPS = 16 / 255


def ta_data(b=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    # A power-of-two batch: the port's mean loss is the sum × 2^-k, exactly.
    return torch.rand(b, 3, 16, 16, generator=g), torch.randint(0, 10, (b,), generator=g)


def ta_clamp(x, lo, hi):  # transferattack/utils.py: clamp
    return torch.min(torch.max(x, lo), hi)


def ta_update_delta(delta, data, momentum, alpha):  # transferattack/attack.py: update_delta (L∞)
    delta = torch.clamp(delta + alpha * momentum.sign(), -TA_EPS, TA_EPS)
    return ta_clamp(delta, 0 - data, 1 - data).detach().requires_grad_(True)


def ta_momentum(grad, momentum, decay):  # transferattack/attack.py: get_momentum
    return momentum * decay + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)


def ta_grad(model, x, wrt, label):
    return torch.autograd.grad(F.cross_entropy(model(x), label), wrt)[0]


# ---------------------------------------------------------------- the references, from the port

def ta_rap(model, data, label, *, epoch, alpha, transpoint, epsilon_n, alpha_n, adv_steps, start):
    """gradient/rap.py, L∞, random_start=False for δ; ``start(it)`` replaces n_rap's uniform_."""
    delta = torch.zeros_like(data, requires_grad=True)
    momentum, n_rap = 0, torch.zeros_like(data)
    for it in range(epoch):
        if it >= transpoint:   # get_n_rap(data + delta)
            base = (data + delta).detach()
            n = ta_clamp(start(it), 0 - base, 1 - base).requires_grad_(True)
            for _ in range(adv_steps):
                loss = -F.cross_entropy(model(base + n), label)
                g = torch.autograd.grad(loss, n)[0]
                n = torch.clamp(n + alpha_n * g.sign(), -epsilon_n, epsilon_n)
                n = ta_clamp(n, 0 - base, 1 - base).detach().requires_grad_(True)
            n_rap = n.detach()
        grad = ta_grad(model, data + delta + n_rap, delta, label)
        momentum = ta_momentum(grad, momentum, 1.0)
        delta = ta_update_delta(delta, data, momentum, alpha)
    return (data + delta).detach()


def ta_gra(model, data, label, *, epoch, alpha, radius, num_neighbor, eta, noise):
    """gradient/gra.py; ``noise(t, i)`` replaces each neighbour's uniform_(−radius, radius)."""
    delta = torch.zeros_like(data, requires_grad=True)
    M = torch.full_like(delta, 1 / eta)
    momentum = 0
    for t in range(epoch):
        grad = ta_grad(model, data + delta, delta, label)
        samgrad = 0
        for i in range(num_neighbor):
            samgrad += ta_grad(model, data + delta + noise(t, i), delta, label)
        samgrad = samgrad / num_neighbor
        cur, sam = grad.view(grad.size(0), -1), samgrad.view(samgrad.size(0), -1)
        s = torch.sum(cur * sam, dim=1) / (torch.sqrt(torch.sum(cur ** 2, dim=1)) * torch.sqrt(torch.sum(sam ** 2, dim=1)))
        s = s.unsqueeze(-1).unsqueeze(-1).unsqueeze(-1)
        current = s * grad + (1 - s) * samgrad
        last = momentum
        momentum = ta_momentum(current, momentum, 1.0)
        if isinstance(last, int):
            last = torch.full(momentum.shape, last)
        eq = (last.sign() == momentum.sign()).float()
        M = M * (eq + (torch.ones_like(delta) - eq) * eta)
        delta = ta_update_delta(delta, data, momentum, M * alpha)
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
        momentum = ta_momentum(gradient.sum(0), momentum, decay)
        delta = ta_update_delta(delta, data, momentum, alpha)
    return (data + delta).detach()


def ta_anda(model, data, label, *, epoch, alpha, n_ens, aug_max):
    """gradient/anda.py with sample=False (batch size 1, as the port requires)."""
    assert data.shape[0] == 1
    k = int(n_ens ** 0.5)
    r = torch.linspace(-aug_max, aug_max, k)
    thetas = torch.cat([torch.tensor([[[1, 0, i], [0, 1, j]]], dtype=torch.float) for i in r for j in r])
    xt, lo, hi = data.clone(), data - TA_EPS, data + TA_EPS
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


def ta_emifgsm(model, data, label, *, epoch, alpha, decay, num_sample, radius):
    """gradient/emifgsm.py (random_start=False, L∞): transform() always samples linearly."""
    import numpy as np

    delta = torch.zeros_like(data, requires_grad=True)
    momentum, bar_grad = 0, 0
    factors = np.linspace(-radius, radius, num=num_sample)
    for _ in range(epoch):
        x = data + delta
        logits = model(torch.concat([x + factor * alpha * bar_grad for factor in factors]))
        loss = F.cross_entropy(logits, label.repeat(num_sample))
        grad = torch.autograd.grad(loss, delta)[0]
        bar_grad = grad / (grad.abs().mean(dim=(1, 2, 3), keepdim=True))
        momentum = ta_momentum(grad, momentum, decay)
        delta = ta_update_delta(delta, data, momentum, alpha)
    return (data + delta).detach()


def _ta_mi_loop(model, data, label, *, epoch, alpha, decay, views, copies):
    """transferattack/attack.py's forward for an MI-FGSM input transformation: the mean CE over the
    copies, its gradient with respect to δ, MI's momentum and the L∞ update; ``views(x, t)``."""
    delta = torch.zeros_like(data, requires_grad=True)
    momentum = 0
    for t in range(epoch):
        loss = F.cross_entropy(model(views(data + delta, t)), label.repeat(copies))
        grad = torch.autograd.grad(loss, delta)[0]
        momentum = ta_momentum(grad, momentum, decay)
        delta = ta_update_delta(delta, data, momentum, alpha)
    return (data + delta).detach()


def ta_bsr_shuffle(x, plan):
    """input_transformation/bsr.py's shuffle(x), its draws taken from ``plan`` (dims after
    random.shuffle, get_length's lengths, random.shuffle's order; per strip RandomRotation's angle,
    then the inner lengths and order)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import rotate

    dims, lengths, order, per_strip = plan
    x_strips = list(x.split(tuple(lengths), dim=dims[0]))
    x_strips = [x_strips[k] for k in order]                     # random.shuffle(x_strips)
    out = []
    for x_strip, (angle, inner, inner_order) in zip(x_strips, per_strip):
        # image_rotation: T.RandomRotation(degrees=(-24, 24), interpolation=BILINEAR), whose forward
        # calls rotate(img, angle, interpolation, expand=False, center=None, fill=[0.0] * channels)
        turned = rotate(x_strip, angle, interpolation=InterpolationMode.BILINEAR, expand=False, center=None,
                        fill=[0.0] * x_strip.shape[1])
        pieces = list(turned.split(tuple(inner), dim=dims[1]))
        out.append(torch.cat([pieces[j] for j in inner_order], dim=dims[1]))
    return torch.cat(out, dim=dims[0])


def ta_bsr(model, data, label, *, epoch, alpha, decay, num_scale, plans):
    """input_transformation/bsr.py (random_start=False, L∞); ``plans(t)``: step t's num_scale draws."""
    views = lambda x, t: torch.cat([ta_bsr_shuffle(x, p) for p in plans(t)])  # noqa: E731
    return _ta_mi_loop(model, data, label, epoch=epoch, alpha=alpha, decay=decay, views=views, copies=num_scale)


def ta_sia_blocktransform(x, plan):
    """input_transformation/sia.py's blocktransform(x), its draws taken from ``plan`` (the sorted cut
    points, then per block the op and its own draw: the shift step, the scale, the noise)."""
    rows, cols, blocks = plan
    x_axis, y_axis = rows, cols          # x_axis cuts dim 2, y_axis dim 3, as the port names them
    ops = iter(blocks)
    x_copy = x.clone()
    for i, idx_x in enumerate(x_axis[1:]):
        for j, idx_y in enumerate(y_axis[1:]):
            op, arg = next(ops)
            b = x_copy[:, :, x_axis[i]:idx_x, y_axis[j]:idx_y]
            if op == "vertical_shift":
                out = b.roll(arg, dims=2)
            elif op == "horizontal_shift":
                out = b.roll(arg, dims=3)
            elif op == "vertical_flip":
                out = b.flip(dims=(2,))
            elif op == "horizontal_flip":
                out = b.flip(dims=(3,))
            elif op == "rotate180":
                out = b.rot90(k=2, dims=(2, 3))
            elif op == "scale":
                out = arg * b
            else:   # add_noise: torch.clip(x + zeros_like(x).uniform_(-16/255, 16/255), 0, 1)
                out = torch.clip(b + arg, 0, 1)
            x_copy[:, :, x_axis[i]:idx_x, y_axis[j]:idx_y] = out
    return x_copy


def ta_sia(model, data, label, *, epoch, alpha, decay, num_scale, plans):
    """input_transformation/sia.py (random_start=False, L∞); ``plans(t)``: step t's num_scale draws."""
    views = lambda x, t: torch.cat([ta_sia_blocktransform(x, p) for p in plans(t)])  # noqa: E731
    return _ta_mi_loop(model, data, label, epoch=epoch, alpha=alpha, decay=decay, views=views, copies=num_scale)


def ta_cwa(members, data, label, *, epoch, alpha, epsilon, decay, r_size, inner_step_size):
    """ensemble/cwa.py with random_start=False (L∞): ``members`` are the ensemble's models, whose
    logits its EnsembleModel averages (mode 'mean')."""
    ensemble = lambda x: torch.stack([m(x) for m in members]).mean(0)  # noqa: E731
    delta = torch.zeros_like(data, requires_grad=True)
    inner_momentum, outer_momentum = 0.0, 0.0
    for _ in range(epoch):
        original_delta = delta.clone().detach()
        grad = ta_grad(ensemble, data + delta, delta, label)
        inner_delta = delta.clone().detach()
        inner_delta = torch.clamp(inner_delta + (-r_size) * grad.sign(), -epsilon, epsilon)   # update_delta(.., -r)
        inner_delta = ta_clamp(inner_delta, 0 - data, 1 - data).detach()
        for k in range(len(members)):
            inner_delta.requires_grad = True
            inner_k_grad = ta_grad(members[k], data + inner_delta, inner_delta, label)
            inner_delta.requires_grad = False
            inner_momentum = decay * inner_momentum + inner_k_grad / torch.norm(
                inner_k_grad.reshape(data.shape[0], -1), p=2, dim=1).view(data.shape[0], 1, 1, 1)
            inner_delta = torch.clamp(inner_delta + inner_step_size * inner_momentum, -epsilon, epsilon)
            inner_delta = ta_clamp(inner_delta, 0 - data, 1 - data)
        fake_grad = inner_delta - original_delta
        outer_momentum = outer_momentum * decay + fake_grad / torch.norm(fake_grad, p=1)
        delta = torch.clamp(delta + alpha * outer_momentum.sign(), -epsilon, epsilon)
        delta = ta_clamp(delta, 0 - data, 1 - data).detach().requires_grad_(True)
    return (data + delta).detach()


def surrogate_for(method, model):
    """The surrogate a method runs on: an Ensemble of the model twice for an ensemble method (CWA, which
    declares ``members``), else the model itself."""
    from flatbench.attacks import ESTIMATORS, METHODS
    from flatbench.models import Ensemble

    return Ensemble([model, model]) if "members" in ESTIMATORS.get(METHODS[method][1]).names() else model


class TALightEnsemble(torch.nn.Module):
    """ensemble/lgv.py's LightEnsemble with n_grad=1: each forward goes to the next model of the list.
    Its shuffle (random.shuffle, once) is replaced by the order it is handed, and its counter starts at
    ``f_count`` (the port's counter runs on across batches)."""

    def __init__(self, models, f_count=0):
        super().__init__()
        self.models, self.f_count = torch.nn.ModuleList(models), f_count

    def forward(self, x):
        i = self.f_count % len(self.models)
        self.f_count += 1
        return self.models[i](x)


def ta_lgv(models, start, data, label, *, epoch, alpha, decay):
    """ensemble/lgv.py: MI-FGSM (random_start=False) through a LightEnsemble of ``models``, in that order."""
    return _ta_mi_loop(TALightEnsemble(models, start), data, label, epoch=epoch, alpha=alpha, decay=decay,
                       views=lambda x, t: x, copies=1)


def lgv_release(root, arch="resnet18", n=2):
    """A directory in the LGV release's layout: n ``{"state_dict": ...}`` checkpoints of random-init weights."""
    import timm

    folder = root / "models" / "ImageNet" / arch / "cSGD" / "seed0"
    folder.mkdir(parents=True)
    for i in range(n):
        torch.manual_seed(i)
        torch.save({"epoch": i, "state_dict": timm.create_model(arch, pretrained=False).state_dict()},
                   folder / f"{i:03d}.pt")
    return folder
