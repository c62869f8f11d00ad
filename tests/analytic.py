"""Models with known gradients and Hessians, on which the estimators' formulas are checked."""
import torch

from flatbench.attacks import Attack, Penalty


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
