"""Training a testbed model from scratch, and the sidecar fields that say how (the cache key)."""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from flatbench.models.wrap import Preprocess, freeze
from flatbench.models.testbed.adversarial import AdversarialBatches, robust_accuracy
from flatbench.models.testbed.architectures import IMAGE_SIZE, MEAN, STD, TESTBED

# Bump when the training code changes in a way the recipe does not capture.
TRAIN_CODE_VERSION = 1


def _crop(pad: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.stack([pad[i, :, dy[i]: dy[i] + h, dx[i]: dx[i] + w] for i in range(pad.shape[0])])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return 100.0 * correct / len(x)


def train(name: str, seed: Optional[int] = None, progress: bool = True) -> tuple:
    """Train testbed model ``name`` from scratch (from its own training seed unless ``seed`` says
    another); returns (wrapped model, sidecar dict). An instance stored in float16 has its weights
    rounded to float16 before its accuracy is measured: the accuracy is the stored model's."""
    from tqdm.auto import tqdm

    from flatbench.data.digits import load_split

    spec = TESTBED[name]
    rec = spec.recipe
    seed = spec.seed if seed is None else int(seed)
    train_set, test_set = load_split("train"), load_split("test")
    torch.manual_seed(seed)
    net = spec.build()
    model = Preprocess(net, MEAN, STD, name=name)
    for p in model.model.parameters():
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    x, y = train_set.floats(), train_set.labels
    steps_per_epoch = (len(x) + rec.batch_size - 1) // rec.batch_size
    opt = torch.optim.AdamW(model.model.parameters(), lr=rec.lr, weight_decay=rec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=rec.lr, total_steps=rec.epochs * steps_per_epoch)
    adversarial = _adversarial_batches(spec, gen)
    t0 = time.perf_counter()
    bar = tqdm(range(rec.epochs), desc=f"train {name}", disable=not progress, leave=False)
    for _ in bar:
        loss = _epoch(model, x, y, rec, opt, sched, gen, adversarial, spec.sam)
        bar.set_postfix(loss=f"{loss:.3f}")
    seconds = time.perf_counter() - t0
    if spec.dtype == "float16":
        with torch.no_grad():
            for t in model.model.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
    freeze(model)
    acc = accuracy(model, test_set.floats(), test_set.labels)
    meta = sidecar_key(name, seed)
    meta.update({"test_acc": round(acc, 3), "train_seconds": round(seconds, 2), "family": spec.family,
                 "n_params": sum(p.numel() for p in net.parameters())})
    if spec.sam is not None:   # beside the plain model of its recipe and seed: what the flat training cost
        meta["plain"] = _plain_accuracy(name)
    if spec.adversarial is not None:   # its white-box robustness: PGD-20 at its own eps
        meta["robust_acc_pgd20"] = round(robust_accuracy(model, test_set.floats(), test_set.labels,
                                                         eps=spec.adversarial.eps), 3)
    return model, meta


def pinned_test_acc(name: str) -> float:
    """The test accuracy the pinned sidecar of ``name`` records."""
    from flatbench.models.testbed.pinning import pinned_sidecar   # (pinning imports this module)

    return pinned_sidecar(name)["test_acc"]


def _plain_accuracy(name: str) -> dict:
    """The pinned test accuracy of the plain model ``name`` was trained beside (its name less -sam)."""
    plain = name[: -len("-sam")]
    return {"name": plain, "test_acc": pinned_test_acc(plain)}


def _adversarial_batches(spec, gen: torch.Generator) -> Optional[AdversarialBatches]:
    if spec.adversarial is None:
        return None
    from flatbench.models.testbed.pinning import load_pinned   # the static models of ensemble adversarial training

    return AdversarialBatches(spec.adversarial, load_pinned, gen)


def _epoch(model, x, y, rec, opt, sched, gen, adversarial, sam=None) -> float:
    """One pass over the shuffled training set, in the recipe's batches and shifts; the last batch's loss.
    With ``sam``, each batch's gradient is SAM's (:func:`_sam_gradient`)."""
    model.model.train()
    perm = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), rec.batch_size):
        idx = perm[i:i + rec.batch_size]
        xb = _crop(F.pad(x[idx], (rec.shift,) * 4), *_offsets(len(idx), rec.shift, gen), IMAGE_SIZE, IMAGE_SIZE) if rec.shift else x[idx]
        yb = y[idx]
        if adversarial is not None:
            xb, yb = adversarial(model, xb, yb)
        loss = F.cross_entropy(model(xb), yb, label_smoothing=rec.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if sam is not None:
            _sam_gradient(model, xb, yb, rec, sam.rho)
        opt.step()
        sched.step()
    return loss.item()


def _sam_gradient(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, rec, rho: float) -> None:
    """Replace the parameters' gradients g (at w) with SAM's, ∇L(w + ρ·g/‖g‖₂), ‖g‖₂ over all of them
    together (Foret et al.); the weights are w again afterwards. BatchNorm's running mean and variance
    are not updated by the second forward (they follow the batches at w only), as common SAM code does;
    its num_batches_tracked counts both forwards (it is read only with momentum=None, which no testbed
    network uses)."""
    params = [p for p in model.model.parameters() if p.grad is not None]
    with torch.no_grad():
        norm = torch.norm(torch.stack([p.grad.norm(p=2) for p in params]), p=2)
        kept_w = [p.detach().clone() for p in params]
        for p in params:
            p.add_(p.grad * (rho / (norm + 1e-12)))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    kept = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    for p in params:
        p.grad = None
    F.cross_entropy(model(xb), yb, label_smoothing=rec.label_smoothing).backward()
    for m, momentum in zip(norms, kept):
        m.momentum = momentum
    with torch.no_grad():
        for p, w in zip(params, kept_w):
            p.copy_(w)


def _offsets(n: int, k: int, gen: torch.Generator):
    return torch.randint(0, 2 * k + 1, (n,), generator=gen), torch.randint(0, 2 * k + 1, (n,), generator=gen)


def sidecar_key(name: str, seed: Optional[int] = None) -> dict:
    """The fields that must match for a cached model to be reused."""
    from flatbench.data.digits import load_split

    spec = TESTBED[name]
    stored = {} if spec.dtype == "float32" else {"dtype": spec.dtype}
    if spec.adversarial is not None:
        stored["adversarial"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec.adversarial).items()}
    if spec.sam is not None:
        stored["sam"] = asdict(spec.sam)
    return {
        "name": name,
        "arch": repr(spec.build()),
        "recipe": asdict(spec.recipe),
        "seed": spec.seed if seed is None else int(seed),
        "data_hash": load_split("train").digest() + load_split("test").digest(),
        "train_code_version": TRAIN_CODE_VERSION,
        **stored,
    }


# LGV's collection (flatbench.models.lgv): SGD with momentum at a constant high learning rate
# from the trained weights, the weights kept every `every` steps. Bump when this code changes.
LGV_CODE_VERSION = 1


def collect_lgv_weights(name: str, base: nn.Module, k: int, every: int, lr: float, momentum: float = 0.9,
                        weight_decay: float = 1e-4, seed: int = 0, progress: bool = True) -> list:
    """K state dicts of testbed model ``name`` along SGD from ``base``'s weights (a copy; ``base`` is
    not changed): batches and shifts as its recipe trains, BatchNorm statistics updated (train mode),
    one collected model after each ``every`` steps."""
    import copy

    from tqdm.auto import tqdm

    from flatbench.data.digits import load_split

    rec = TESTBED[name].recipe
    model = copy.deepcopy(base)
    for p in model.model.parameters():
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train_set = load_split("train")
    x, y = train_set.floats(), train_set.labels
    opt = torch.optim.SGD(model.model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    snapshots, perm, pos = [], torch.randperm(len(x), generator=gen), 0
    model.model.train()
    for step in tqdm(range(k * every), desc=f"LGV {name}", disable=not progress, leave=False):
        if pos + rec.batch_size > len(x):   # a new epoch: a fresh order, full batches only
            perm, pos = torch.randperm(len(x), generator=gen), 0
        idx, pos = perm[pos:pos + rec.batch_size], pos + rec.batch_size
        xb = _crop(F.pad(x[idx], (rec.shift,) * 4), *_offsets(len(idx), rec.shift, gen), IMAGE_SIZE, IMAGE_SIZE) if rec.shift else x[idx]
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % every == 0:
            snapshots.append({n: v.detach().clone() for n, v in model.model.state_dict().items()})
    return snapshots
