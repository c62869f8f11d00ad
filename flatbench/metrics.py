"""Pure metric functions: success counts and rates, perturbation sizes."""
from __future__ import annotations

from typing import Dict

import torch

from .stats import wilson


def success_flags(pred: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor = None) -> torch.Tensor:
    """Untargeted: the prediction differs from the label. Targeted: it equals the target."""
    return pred.eq(targets) if targets is not None else pred.ne(labels)


def transfer_counts(clean_pred: torch.Tensor, adv_pred: torch.Tensor, labels: torch.Tensor,
                    targets: torch.Tensor = None) -> Dict[str, float]:
    """Counts and rates for one target model.

    ``asr_ci_low``/``asr_ci_high`` bound ``asr`` with the Wilson 95% interval.
    ``asr`` is over all images (the convention of TransferAttack and the PGN paper);
    ``asr_clean_correct`` is over the images the target classified correctly when clean
    (the convention of papers that exclude already-misclassified images).
    """
    n = int(labels.numel())
    fooled = success_flags(adv_pred, labels, targets)
    clean_ok = clean_pred.eq(labels)
    n_fooled = int(fooled.sum())
    n_ok = int(clean_ok.sum())
    n_fooled_ok = int((fooled & clean_ok).sum())
    lo, hi = wilson(n_fooled, n)
    return {
        "clean_acc": 100.0 * n_ok / n,
        "asr": 100.0 * n_fooled / n,
        "asr_ci_low": 100.0 * lo,
        "asr_ci_high": 100.0 * hi,
        "asr_clean_correct": 100.0 * n_fooled_ok / n_ok if n_ok else float("nan"),
        "n_fooled": n_fooled,
        "n_clean_correct": n_ok,
        "n_fooled_clean_correct": n_fooled_ok,
    }


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> Dict[str, float]:
    """Mean L∞ and L2 norms of the perturbation, in 1/255 units."""
    d = (x_adv.float() - x.float()).flatten(1) * (255.0 if x.dtype.is_floating_point else 1.0)
    return {"linf_mean": float(d.abs().amax(1).mean()), "l2_mean": float(d.norm(dim=1).mean())}
