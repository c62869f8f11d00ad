"""TransferAttack's gradient methods written out from its public code (read for these tests; nothing of
it is vendored, and the references share no code with the package): its model stand-in, its update
and momentum, and RAP, GRA, MEF, ANDA and EMI-FGSM."""
import torch
import torch.nn.functional as F


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


def ta_mi_loop(model, data, label, *, epoch, alpha, decay, views, copies):
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


def ta_gaa(model, data, label, *, epoch, epsilon, decay, rho, lambda_param, N, noise, twice=True):
    """gradient/gaa.py, L∞, random_start=False; ``noise(t, i)`` replaces sample_random_example's
    uniform_(−ξ, ξ) (ξ = 3.5·ε in the class, whatever its argument). ``twice=False``: its aggregation
    line without the leading g_hat (the comment's weights (1−λ, 1+λ) alone)."""
    delta = torch.zeros_like(data)
    momentum = torch.zeros_like(delta)
    alpha = epsilon / epoch

    def grad_at(x):
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(model(x), label), x)[0]

    for t in range(epoch):
        g_bar = torch.zeros_like(delta)
        for i in range(N):
            x_prime = torch.clamp(data + delta + noise(t, i), 0, 1)
            g_prime = grad_at(x_prime)
            t_hat = rho * (g_prime / (torch.norm(g_prime, p=1, dim=(1, 2, 3), keepdim=True) + 1e-8))
            g_hat = grad_at(x_prime + t_hat)
            g_prime = (g_hat if twice else 0) + (1 - lambda_param) * g_prime + (1 + lambda_param) * g_hat
            g_bar += g_prime
        g_bar = g_bar / N
        momentum = decay * momentum + (g_bar / (torch.norm(g_bar, p=1, dim=(1, 2, 3), keepdim=True) + 1e-8))
        delta = torch.clamp(delta + alpha * momentum.sign(), -epsilon, epsilon)
        delta = ta_clamp(delta, 0 - data, 1 - data).detach()
    return (data + delta).detach()
