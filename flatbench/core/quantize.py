"""8-bit images that keep the threat model: how a crafted [0,1] set becomes the uint8 set that is
stored and evaluated. Pure (torch only), so storage, crafting and defenses (JPEG) all take it
from here."""
from __future__ import annotations

from typing import Optional

import torch


def quantize(x_adv: torch.Tensor, x_clean_u8: Optional[torch.Tensor] = None, eps: Optional[float] = None,
             norm: str = "linf", mode: str = "round") -> torch.Tensor:
    """Round [0,1] images to uint8 (round, not truncate), staying inside the threat model.

    ``mode="truncate"`` floors instead, as TransferAttack's ``save_images`` does
    (``(x * 255).astype(np.uint8)``); only its experiments use it.

    With the clean uint8 images and eps (in [0,1] units) given, the result stays inside the
    ε-ball on the 8-bit grid: under L∞ each pixel is clipped to ±⌊255·ε⌋ levels; under L2 an
    image that rounding pushed outside the ball is rounded towards the clean image instead
    (|q − c| ≤ |x − c| per pixel, so its norm is at most the crafted one's).
    """
    x = x_adv.detach().float().clamp(0, 1) * 255.0
    q = x.round() if mode == "round" else x.floor()
    if x_clean_u8 is not None and eps is not None:
        c = x_clean_u8.to(q.device).float()
        if norm == "linf":
            k = torch.floor(torch.tensor(eps * 255.0 + 1e-6))
            q = torch.minimum(torch.maximum(q, c - k), c + k)
        elif norm == "l2":
            outside = (q - c).flatten(1).norm(dim=1) > eps * 255.0
            if outside.any():
                toward = c + torch.trunc(x - c)  # rounds every pixel towards the clean image
                q[outside] = toward[outside]
    return q.clamp(0, 255).to(torch.uint8)
