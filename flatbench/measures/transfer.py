"""Pure metric functions: success counts and rates, perturbation sizes."""
from __future__ import annotations

from typing import Dict

import torch

from flatbench.measures.statistics import wilson


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


def visibility(x: torch.Tensor, x_adv: torch.Tensor) -> Dict[str, float]:
    """How visible the change is: the mean PSNR and SSIM over images, adversarial against clean, on the
    stored 8-bit images (uint8 NCHW; float images in [0,1] are rounded to 8 bits first).

    PSNR with a data range of 255. SSIM as Wang et al. (2004): an 11×11 Gaussian window (σ = 1.5),
    K1 = 0.01, K2 = 0.03, the population covariance, local SSIM averaged over the window positions
    inside the image and then over channels. Both from scikit-image (``skimage.metrics``), chosen
    because its ``structural_similarity`` names each of those choices as an argument (rather than
    fixing some of them, as torchmetrics' padding does) and runs on the CPU where the cell's images
    already are; tests/test_visibility.py checks it against the paper's formula written out.

    An image the attack left unchanged has PSNR = ∞; it is left out of ``psnr_mean`` (which is then
    the mean over the changed images; ∞ when none changed) and counts as SSIM = 1.
    """
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    def as_uint8(t: torch.Tensor) -> np.ndarray:
        if t.dtype.is_floating_point:
            t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
        return t.detach().cpu().numpy()

    clean, adv = as_uint8(x), as_uint8(x_adv)
    psnr, ssim = [], []
    for c, a in zip(clean, adv):
        if np.array_equal(c, a):
            ssim.append(1.0)
            continue
        psnr.append(peak_signal_noise_ratio(c, a, data_range=255))
        ssim.append(structural_similarity(c, a, data_range=255, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, K1=0.01, K2=0.03))
    return {"psnr_mean": float(np.mean(psnr)) if psnr else float("inf"), "ssim_mean": float(np.mean(ssim))}
