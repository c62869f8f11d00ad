"""Flatness of the loss around adversarial examples: the quantity PGN and GNP claim to raise.

Every metric is computed per image from ``loss_fn(x) -> per-image losses`` (the surrogate's
attack objective: cross-entropy of the label, or minus that of the target when targeted),
so images never interact and the functions are checked on analytic losses in the tests.
Lengths are in [0,1] units here (the config's 1/255 values are converted by the caller).

* ``loss``: ℓ(x).
* ``grad_l1``, ``grad_l2``: ‖∇ℓ(x)‖₁ and ‖∇ℓ(x)‖₂.
* ``sharp_mean``, ``sharp_max``: with K points u_k ~ U[−ρ, ρ]^d, the mean loss drop
  ℓ(x) − mean_k ℓ(x + u_k) and the max drop ℓ(x) − min_k ℓ(x + u_k). At a flat maximum both
  are small; for a quadratic, E[drop] = −tr(H)·ρ²/6.
* ``sharp_worst``: the loss drop after ``worst_steps`` projected sign-gradient descent
  steps inside the L∞ ball of radius ρ (SAM-style worst-case sharpness).
* ``sharp_worst_linear``, ``sharp_worst_curvature``: sharp_worst split into its first-order part
  ρ·‖∇ℓ(x)‖₁ (the drop a loss linear in the ball would show: the gradient norm again) and what
  remains, sharp_worst − ρ·‖∇ℓ(x)‖₁ (the curvature's part, with the box's clipping). A claim about
  curvature reads the second.
* ``hess_top``: the dominant eigenvalue (largest magnitude) of the input Hessian at x, by
  power iteration on Hessian-vector products (double backward). For ReLU networks the
  Hessian is that of the piecewise-linear network, i.e. of its active linear pieces through
  the softmax-cross-entropy; ReLU's second derivative is zero almost everywhere, so the
  curvature comes from the loss and from smooth parts (GELU, softmax attention).

Randomness (noise points, power-iteration starts, landscape directions) is keyed by the
seed and the image id, so metrics do not depend on batching.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F

from flatbench.core.keyed import keyed_generator
from flatbench.core.registry import ConfigError, shown

LossFn = Callable[[torch.Tensor], torch.Tensor]
METRICS = ("loss", "grad_l1", "grad_l2", "sharp_mean", "sharp_max", "sharp_worst", "sharp_worst_linear",
           "sharp_worst_curvature", "hess_top")


def split_worst(sharp_worst, grad_l1, rho: float):
    """(ρ·‖∇ℓ‖₁, sharp_worst − ρ·‖∇ℓ‖₁): sharp_worst's first-order part and the rest, ρ in [0,1] units.
    Works on tensors, arrays and pandas columns alike (an old flatness.csv gets them in the report)."""
    linear = rho * grad_l1
    return linear, sharp_worst - linear


@dataclass
class FlatnessSettings:
    """Settings of the flatness group (ρ in [0,1] units here)."""

    rho: float = 8 / 255
    k_samples: int = 16
    worst_steps: int = 5
    power_iters: int = 20
    tol: float = 1e-3
    clamp: bool = True
    at_clean: bool = False
    landscape_images: int = 2
    landscape_points: int = 21
    landscape_span: float = 2.0  # in units of rho
    model: Optional[str] = None  # the model whose loss is measured (None: the surrogate), e.g. an LGV set's base

    def check(self) -> "FlatnessSettings":
        for key, ok, allowed in [
            ("flatness.rho", self.rho > 0, "> 0 (1/255 units)"), ("flatness.k_samples", self.k_samples >= 1, ">= 1"),
            ("flatness.worst_steps", self.worst_steps >= 1, ">= 1"), ("flatness.power_iters", self.power_iters >= 1, ">= 1"),
            ("flatness.tol", self.tol > 0, "> 0"), ("flatness.landscape_images", self.landscape_images >= 0, ">= 0"),
            ("flatness.landscape_points", self.landscape_points >= 3, ">= 3"),
            ("flatness.landscape_span", self.landscape_span > 0, "> 0"),
        ]:
            if not ok:
                value = getattr(self, key.split(".")[1])
                # rho is held in [0,1] units; the message shows it as it was written (1/255 units)
                shown_value = shown(round(value * 255, 6)) if key == "flatness.rho" else shown(value)
                raise ConfigError(f"{key}={shown_value} is out of range; allowed {allowed}")
        return self


def image_generator(seed: int, image_id: str, tag: str, device) -> torch.Generator:
    return keyed_generator(f"{seed}|{image_id}|{tag}".encode(), device)


def _per_image(shape, ids: Sequence[str], seed: int, tag: str, device, kind: str = "uniform") -> torch.Tensor:
    out = []
    for i in ids:
        g = image_generator(seed, i, tag, device)
        out.append(torch.rand(shape, generator=g, device=device) * 2 - 1 if kind == "uniform"
                   else torch.randn(shape, generator=g, device=device))
    return torch.stack(out)


def _grad(loss_fn: LossFn, x: torch.Tensor, create_graph: bool = False):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True) if not create_graph else x
        loss = loss_fn(x)
        (g,) = torch.autograd.grad(loss.sum(), x, create_graph=create_graph)
    return loss, g


def hessian_top(loss_fn: LossFn, x: torch.Tensor, ids: Sequence[str], seed: int = 0, iters: int = 20,
                tol: float = 1e-3) -> torch.Tensor:
    """Per-image dominant Hessian eigenvalue by power iteration on Hessian-vector products."""
    v = _per_image(x.shape[1:], ids, seed, "hess", x.device, "normal")
    v = v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    lam = torch.zeros(len(x), device=x.device)
    for _ in range(iters):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(loss_fn(xr).sum(), xr, create_graph=True)
            if not g.requires_grad:  # a loss that is linear in x: H = 0
                return torch.zeros(len(x), device=x.device)
            (hv,) = torch.autograd.grad((g * v).sum(), xr)
        new = (hv * v).flatten(1).sum(1)  # Rayleigh quotient v·Hv with ‖v‖ = 1
        norm = hv.flatten(1).norm(dim=1)
        v = torch.where(norm.view(-1, *[1] * (x.dim() - 1)) > 0, hv / norm.clamp_min(1e-30).view(-1, *[1] * (x.dim() - 1)), v)
        done = ((new - lam).abs() <= tol * new.abs().clamp_min(1e-12)).all()
        lam = new
        if done:
            break
    return lam.detach()


def metrics(loss_fn: LossFn, x: torch.Tensor, ids: Sequence[str], settings: FlatnessSettings,
            seed: int = 0, tick: Optional[Callable[[float], None]] = None) -> Dict[str, torch.Tensor]:
    """Every metric of the module docstring, per image (tensors of shape [B]). ``tick(share)`` is told
    after each part what share of the batch's work is done (a progress bar; the shares, by the part's
    passes through the model, sum to 1)."""
    st = settings
    cost = {"grad": 1.0, "sharp": 0.5 * st.k_samples, "worst": float(st.worst_steps), "hess": 2.0 * st.power_iters}
    done = (lambda part: tick(cost[part] / sum(cost.values()))) if tick is not None else (lambda part: None)
    loss, g = _grad(loss_fn, x)
    done("grad")
    loss = loss.detach()
    out = {"loss": loss, "grad_l1": g.flatten(1).abs().sum(1), "grad_l2": g.flatten(1).norm(dim=1)}
    lows = []
    with torch.no_grad():
        for k in range(st.k_samples):
            u = _per_image(x.shape[1:], ids, seed, f"sharp{k}", x.device) * st.rho
            z = x + u
            lows.append(loss_fn(z.clamp(0, 1) if st.clamp else z))
    lows = torch.stack(lows)
    done("sharp")
    out["sharp_mean"] = loss - lows.mean(0)
    out["sharp_max"] = loss - lows.min(0).values
    step = 2.5 * st.rho / st.worst_steps  # the usual PGD step: reach the boundary with slack
    z = x.clone()
    for _ in range(st.worst_steps):
        _, gz = _grad(loss_fn, z)
        z = z - step * gz.sign()
        z = x + (z - x).clamp(-st.rho, st.rho)
        if st.clamp:
            z = z.clamp(0, 1)
    with torch.no_grad():
        out["sharp_worst"] = loss - loss_fn(z)
    done("worst")
    out["sharp_worst_linear"], out["sharp_worst_curvature"] = split_worst(out["sharp_worst"], out["grad_l1"], st.rho)
    out["hess_top"] = hessian_top(loss_fn, x, ids, seed, st.power_iters, st.tol)
    done("hess")
    return {k: v.detach().float().cpu() for k, v in out.items()}


def model_loss(model: torch.nn.Module, y: torch.Tensor, targeted: bool) -> LossFn:
    """The attack objective on ``model``: CE(label), or −CE(target) when targeted, per image."""

    def fn(x):
        ce = F.cross_entropy(model(x).float(), y.to(x.device), reduction="none")
        return -ce if targeted else ce

    return fn


def aggregate(per_image: Dict[str, Sequence[float]], prefix: str = "flat") -> Dict[str, float]:
    """mean, median, q25, q75 of each metric, as CSV columns ``flat_<metric>_<stat>``."""
    cols = {}
    for m, values in per_image.items():
        t = torch.as_tensor(list(values), dtype=torch.float64)
        t = t[torch.isfinite(t)]
        if len(t) == 0:
            continue
        q = torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        cols.update({f"{prefix}_{m}_mean": float(t.mean()), f"{prefix}_{m}_median": float(q[1]),
                     f"{prefix}_{m}_q25": float(q[0]), f"{prefix}_{m}_q75": float(q[2])})
    return cols


# ---------------------------------------------------------------- landscapes

def filter_normalized(d: torch.Tensor, scale: float) -> torch.Tensor:
    """Direction normalised per channel (the input-space analogue of Li et al.'s filter
    normalisation): each channel gets the L2 norm of a uniform ``scale`` perturbation of it."""
    per = d.flatten(2).norm(dim=2).clamp_min(1e-12)  # B, C
    target = scale * (d[0, 0].numel() ** 0.5)
    return d * (target / per).view(*per.shape, 1, 1)


def landscape(loss_fn: LossFn, x: torch.Tensor, ids: Sequence[str], settings: FlatnessSettings,
              seed: int = 0) -> List[dict]:
    """Loss along a random and the gradient direction (1-D) and on a 2-D random plane.

    Directions are scaled so that t = 1 is a perturbation of the size of ρ (sign-gradient:
    exactly ρ in L∞); t runs over [−span, span]. Returns long-format rows.
    """
    st = settings
    ts = torch.linspace(-st.landscape_span, st.landscape_span, st.landscape_points)
    _, g = _grad(loss_fn, x)
    d_rand = filter_normalized(_per_image(x.shape[1:], ids, seed, "land1", x.device, "normal"), st.rho)
    d_grad = g.sign() * st.rho
    d_a = filter_normalized(_per_image(x.shape[1:], ids, seed, "land2a", x.device, "normal"), st.rho)
    d_b = filter_normalized(_per_image(x.shape[1:], ids, seed, "land2b", x.device, "normal"), st.rho)
    rows = []
    with torch.no_grad():
        for kind, d in (("random", d_rand), ("gradient", d_grad)):
            for t in ts:
                loss = loss_fn((x + t * d).clamp(0, 1) if st.clamp else x + t * d)
                rows += [{"image_id": i, "kind": kind, "t": float(t), "s": 0.0, "loss": float(v)} for i, v in zip(ids, loss)]
        for t in ts:
            for s in ts:
                z = x + t * d_a + s * d_b
                loss = loss_fn(z.clamp(0, 1) if st.clamp else z)
                rows += [{"image_id": i, "kind": "2d", "t": float(t), "s": float(s), "loss": float(v)} for i, v in zip(ids, loss)]
    return rows
