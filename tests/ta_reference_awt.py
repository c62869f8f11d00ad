"""TransferAttack's model_related/awt.py written out from its public code (read for these tests; nothing of
it is vendored, and the reference shares no code with the package): the AWT loop and its SAM optimizer,
with torch.optim.SGD as the port's base optimizer, on a copy of the model whose weights it writes."""
import copy

import torch
import torch.nn.functional as F

from ta_reference import ta_momentum, ta_update_delta


class TASAM(torch.optim.Optimizer):
    """awt.py's SAM class (adaptive=False), as the port defines it."""

    def __init__(self, params, base_optimizer, rho=0.05, **kwargs):
        defaults = dict(rho=rho, adaptive=False, **kwargs)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        grad_norm = torch.norm(torch.stack([p.grad.norm(p=2) for group in self.param_groups for p in group["params"]
                                            if p.grad is not None]), p=2)
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.data.clone()
                p.add_(p.grad * scale.to(p))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.data = self.state[p]["old_p"]
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure=None):
        closure = torch.enable_grad()(closure)
        self.first_step(zero_grad=True)
        loss = closure()
        self.second_step()
        return loss


def ta_awt(model, data, label, *, epoch, alpha, gamma, num_neighbor, sam_lr, sam_rho, noise,
           zero_grad_each_step=False):
    """model_related/awt.py's forward on one batch of a fresh attacker, L∞, random_start=False, no transform;
    ``noise(t, i)`` replaces each neighbour's uniform_(−ζ, ζ). ``zero_grad_each_step``: the weights' gradients
    zeroed before each step's first closure (SAM as written), which the port never does. Returns the images
    and the tuned model (the port restores its weights at the end; the copy shows what they were)."""
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(True)
    sam = TASAM(model.parameters(), torch.optim.SGD, lr=sam_lr, rho=sam_rho, momentum=0.5)
    delta = torch.zeros_like(data, requires_grad=True)
    momentum = 0
    for t in range(epoch):
        def closure():
            loss = F.cross_entropy(model(data + delta), label) + F.cross_entropy(model(data), label)
            loss.backward(retain_graph=True)
            return loss

        if zero_grad_each_step:
            sam.zero_grad()
        closure()
        sam.step(closure=closure)
        averaged_gradient = 0
        for i in range(num_neighbor):
            x_near = data + delta + noise(t, i)
            g_1 = torch.autograd.grad(F.cross_entropy(model(x_near), label), delta)[0]
            x_next = x_near + alpha * (-g_1 / (torch.abs(g_1).mean(dim=(1, 2, 3), keepdim=True)))
            g_2 = torch.autograd.grad(F.cross_entropy(model(x_next), label), delta)[0]
            averaged_gradient += (1 - gamma) * g_1 + gamma * g_2
        averaged_gradient = averaged_gradient / num_neighbor
        momentum = ta_momentum(averaged_gradient, momentum, 1.0)
        delta = ta_update_delta(delta, data, momentum, alpha)
    return (data + delta).detach(), model
