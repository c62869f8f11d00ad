"""How visible the perturbation is (issue 33, part 5): every row has ``psnr_mean`` and ``ssim_mean``,
adversarial against clean on the stored 8-bit images: PSNR with a data range of 255, SSIM as Wang et
al. (2004) (11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, population covariance, the mean
over channels). flatbench calls scikit-image; this file checks it against a second implementation
written out from the paper's formula."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F


from flatbench.measures.transfer import visibility
from helpers import SMALL, run


def _gaussian_window(size=11, sigma=1.5):
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    w = torch.outer(g, g)
    return (w / w.sum())[None, None]


def ssim_wang(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. (2004), eq. 13 and the mean SSIM: local statistics under an 11×11 Gaussian window
    (σ = 1.5), the window inside the image (MATLAB's filter2 'valid', as the paper's own code),
    population (co)variances, C1 = (0.01·255)², C2 = (0.03·255)²; the mean over channels."""
    c1, c2, w = (0.01 * 255) ** 2, (0.03 * 255) ** 2, _gaussian_window()
    out = []
    for x, y in zip(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)):
        x, y = x[None, None], y[None, None]
        mx, my = F.conv2d(x, w), F.conv2d(y, w)
        sxx = F.conv2d(x * x, w) - mx ** 2
        syy = F.conv2d(y * y, w) - my ** 2
        sxy = F.conv2d(x * y, w) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
        out.append(float(s.mean()))
    return float(np.mean(out))


def psnr_formula(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255 ** 2 / mse)


def _digits_and_colour():
    from sklearn.datasets import load_digits

    d = torch.as_tensor(load_digits().images[:4], dtype=torch.float32)[:, None] / 16
    grey = (F.interpolate(d, size=(32, 32), mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    colour = (F.interpolate(torch.rand(3, 3, 6, 6, generator=g), size=(40, 40), mode="bilinear") * 255).round().to(torch.uint8)
    return [grey, colour]


@pytest.mark.parametrize("which", [0, 1], ids=["digits", "colour"])
def test_psnr_and_ssim_equal_a_second_implementation(which):
    clean = _digits_and_colour()[which]
    g = torch.Generator().manual_seed(1)
    step = torch.randint(-8, 9, clean.shape, generator=g)
    adv = (clean.int() + step).clamp(0, 255).to(torch.uint8)
    got = visibility(clean, adv)
    ssim = np.mean([ssim_wang(c.numpy(), a.numpy()) for c, a in zip(clean, adv)])
    psnr = np.mean([psnr_formula(c.numpy(), a.numpy()) for c, a in zip(clean, adv)])
    assert got["ssim_mean"] == pytest.approx(ssim, abs=1e-9) and got["psnr_mean"] == pytest.approx(psnr, abs=1e-9)
    assert 0 < got["ssim_mean"] < 1 and 20 < got["psnr_mean"] < 50
    same = visibility(clean, clean.clone())
    assert same["ssim_mean"] == 1.0 and same["psnr_mean"] == float("inf")


def test_an_unchanged_image_is_left_out_of_the_psnr_mean_only():
    clean = _digits_and_colour()[0]
    adv = clean.clone()
    adv[0] = (clean[0].int() + 4).clamp(0, 255).to(torch.uint8)   # one image changed, three left as they were
    got = visibility(clean, adv)
    assert got["psnr_mean"] == pytest.approx(psnr_formula(clean[0].numpy(), adv[0].numpy()))
    assert got["ssim_mean"] == pytest.approx((ssim_wang(clean[0].numpy(), adv[0].numpy()) + 3) / 4)


def test_rows_carry_visibility_and_the_report_tabulates_it(trained_zoo, zoo_dir, tmp_path):
    from flatbench.cell.plan import load_data
    from flatbench.entry.compose import compose
    from flatbench.entry.config import resolve
    from flatbench.cell.store import load_adv

    sweep = tmp_path / "sweep"
    run(["flatbench", "-m", "method=mifgsm,ifgsm", *SMALL, f"hydra.sweep.dir={sweep}"], zoo_dir, tmp_path)
    for cell in ("0", "1"):
        df = pd.read_csv(sweep / cell / "results.csv")
        adv, ids = load_adv(sweep / cell / "adv.safetensors")
        clean = load_data(resolve(compose(["n_images=8"]))).images
        assert list(ids) == list(load_data(resolve(compose(["n_images=8"]))).ids)
        want = visibility(clean, adv)
        assert df["psnr_mean"].nunique() == 1 and df["psnr_mean"].iloc[0] == pytest.approx(want["psnr_mean"], abs=1e-6)
        assert df["ssim_mean"].iloc[0] == pytest.approx(want["ssim_mean"], abs=1e-6) and 0 < want["ssim_mean"] < 1
    run(["flatbench-report", str(sweep), "--value", "ssim_mean"], zoo_dir, tmp_path)
    md = (sweep / "report" / "table.md").read_text()
    assert "ssim_mean" in md and f"{want['ssim_mean']:.3f}" in md
