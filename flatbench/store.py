"""Adversarial sets as 8-bit images: rounding that keeps the threat model, and storage."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from .io import atomic_write_bytes


def quantize(x_adv: torch.Tensor, x_clean_u8: Optional[torch.Tensor] = None, eps: Optional[float] = None,
             norm: str = "linf") -> torch.Tensor:
    """Round [0,1] images to uint8 (round, not truncate).

    With the clean uint8 images and an L∞ eps (in [0,1] units) given, the result stays
    inside the ε-ball on the 8-bit grid even when eps·255 is not an integer.
    """
    q = (x_adv.detach().float().clamp(0, 1) * 255.0).round()
    if x_clean_u8 is not None and eps is not None and norm == "linf":
        c = x_clean_u8.to(q.device).float()
        k = torch.floor(torch.tensor(eps * 255.0 + 1e-6))
        q = torch.minimum(torch.maximum(q, c - k), c + k)
    return q.clamp(0, 255).to(torch.uint8)


def save_adv(path: Path, images: torch.Tensor, ids: List[str]) -> Path:
    from safetensors.torch import save

    if images.dtype != torch.uint8:
        raise TypeError("adversarial sets are stored as uint8")
    data = save({"images": images.contiguous().cpu()}, metadata={"ids": json.dumps(list(ids))})
    return atomic_write_bytes(path, data)


def load_adv(path: Path) -> Tuple[torch.Tensor, List[str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        ids = json.loads(f.metadata()["ids"])
        return f.get_tensor("images"), ids
