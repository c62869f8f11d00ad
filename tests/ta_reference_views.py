"""TransferAttack's input transformations and ensembles written out from its public code: BSR and SIA
with their draws replayed, CWA, LGV's light ensemble and a directory in the LGV release's layout, and
FGSRA, whose neighbours are views in the frequency domain."""
import math

import torch

from ta_reference import ta_clamp, ta_grad, ta_mi_loop, ta_momentum, ta_update_delta


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
    return ta_mi_loop(model, data, label, epoch=epoch, alpha=alpha, decay=decay, views=views, copies=num_scale)


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
    return ta_mi_loop(model, data, label, epoch=epoch, alpha=alpha, decay=decay, views=views, copies=num_scale)


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
    return ta_mi_loop(TALightEnsemble(models, start), data, label, epoch=epoch, alpha=alpha, decay=decay,
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


def _ta_dct(x):   # gradient/fgsra.py: dct(x, norm=None)
    shape, n = x.shape, x.shape[-1]
    x = x.contiguous().view(-1, n)
    v = torch.cat([x[:, ::2], x[:, 1::2].flip([1])], dim=1)
    vc = torch.fft.fft(v)
    k = -torch.arange(n, dtype=x.dtype)[None, :] * math.pi / (2 * n)
    return 2 * (vc.real * torch.cos(k) - vc.imag * torch.sin(k)).view(*shape)


def _ta_idct(X):   # gradient/fgsra.py: idct(X, norm=None)
    shape, n = X.shape, X.shape[-1]
    xv = X.contiguous().view(-1, n) / 2
    k = torch.arange(n, dtype=X.dtype)[None, :] * math.pi / (2 * n)
    vtr, vti = xv, torch.cat([xv[:, :1] * 0, -xv.flip([1])[:, :-1]], dim=1)
    vr, vi = vtr * torch.cos(k) - vti * torch.sin(k), vtr * torch.sin(k) + vti * torch.cos(k)
    v = torch.fft.ifft(torch.complex(real=vr, imag=vi))
    out = v.new_zeros(v.shape)
    out[:, ::2] += v[:, :n - (n // 2)]
    out[:, 1::2] += v.flip([1])[:, :n // 2]
    return out.view(*shape).real


def _ta_2d(f, x):
    return f(f(x).transpose(-1, -2)).transpose(-1, -2)


def ta_fgsra(model, data, label, *, epoch, alpha, N, draws):
    """gradient/fgsra.py (L∞, random_start=False): ``draws(t, i)`` -> (gauss, mask) replaces its
    rand_like draws of neighbour i at step t."""
    delta = torch.zeros_like(data, requires_grad=True)
    m, momentum = torch.ones_like(data) * 10 / 9.4, 0
    cos = lambda a, b: (a * b).sum([1, 2, 3], keepdim=True) / (  # noqa: E731
        torch.sqrt((a ** 2).sum([1, 2, 3], keepdim=True)) * torch.sqrt((b ** 2).sum([1, 2, 3], keepdim=True)))
    for t in range(epoch):
        x = data + delta
        current = ta_grad(model, x, delta, label)
        grads, sims = [], []
        for i in range(N):
            gauss, mask = draws(t, i)
            x_idct = _ta_2d(_ta_idct, _ta_2d(_ta_dct, x + gauss) * mask)
            grads.append(ta_grad(model, x_idct, delta, label))
            sims.append(cos(x, x_idct))
        avg = (torch.stack(grads, dim=1) * torch.stack(sims, dim=1)).sum(1)
        s = cos(current, avg)
        current = s * current + (1 - s) * avg
        momentum = ta_momentum(current, momentum, 1.0)
        eqm = (torch.sign(momentum) == torch.sign(current)).float()
        m = m * (eqm + (torch.ones_like(data) - eqm) * 0.94)
        delta = ta_update_delta(delta, data, momentum, alpha * m)
    return (data + delta).detach()
