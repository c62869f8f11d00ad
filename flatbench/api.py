"""The steps of a cell, callable from Python: load a data set by name, craft it with an attack, and
evaluate the adversarial images on a target zoo, each the way ``flatbench`` runs it, so a notebook's
numbers equal the command line's for the same settings."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Union

import torch

from flatbench.data import ImageSet

if TYPE_CHECKING:
    import pandas


def load_dataset(name: str = "digits", n_images: Optional[int] = None, **settings: Any) -> ImageSet:
    """A data set by its config name (``flatbench list data``), as ``data=NAME`` builds it.

    Args:
        name: the config name: ``digits``, ``nips17``, ``transferattack``, ``imagefolder``.
        n_images: the first N images (the command line's ``n_images``); None: all of them.
        **settings: the data set's own keys (``split="train"``, ``root=...``), as ``data.KEY=VALUE``.

    Returns:
        An :class:`~flatbench.data.ImageSet`: ``images`` (uint8 NCHW), ``labels``, ``ids``;
        ``floats()`` gives the [0,1] images an attack takes.
    """
    from flatbench.cell.plan import load_data as load_cell_data
    from flatbench.entry.compose import compose
    from flatbench.entry.settings import load_settings

    _known("data", name)
    overrides = [f"data={name}", f"n_images={'all' if n_images is None else int(n_images)}"]
    overrides += [f"data.{k}={_override(v)}" for k, v in settings.items()]
    return load_cell_data(load_settings(compose(overrides)).cell)


def _known(group: str, name: str) -> None:
    """A ConfigError naming the valid choices when ``name`` is not a config of ``group``."""
    from pathlib import Path

    from flatbench.entry.compose import CONFIG_DIR
    from flatbench.core.registry import ConfigError

    choices = sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
    if name not in choices:
        raise ConfigError(f"{group}={name!r} is not a known name; valid: {', '.join(choices)}")


def _override(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def load_zoo(targets: Union[str, Dict[str, Any]] = "digits") -> Dict[str, Dict[str, Any]]:
    """A target zoo by its config name (``flatbench list zoos``) or as a mapping like the YAML's
    (``{"cnn": {"model": "digits-cnn"}}``): key -> entry (model, role, ...)."""
    from flatbench.entry.compose import compose
    from flatbench.entry.target_zoo import parse_targets

    if isinstance(targets, dict):
        return parse_targets(targets)
    _known("targets", targets)
    return parse_targets(compose([f"targets={targets}"]).targets)


def craft_set(attack, data: ImageSet, seed: int = 0, batch_size: int = 64, device: Any = None,
          progress: bool = True) -> torch.Tensor:
    """The adversarial set of ``data`` as a cell crafts it: batches of ``batch_size`` keyed by the
    run's ``seed`` and each batch's first index, rounded to 8 bits inside the ε-ball.

    Args:
        attack: from :func:`~flatbench.create_attack` (its model on ``device``).
        data: from :func:`load_dataset`.
        seed: the command line's ``seed``.
        batch_size: the command line's ``batch_size`` (it keys the noise, so it enters the cell id).
        device: where the images go (None: the attack's model's device).

    Returns:
        uint8 NCHW images, the set a cell stores as ``adv.safetensors``.
    """
    from flatbench.cell.crafting import craft as craft_cell

    device = torch.device(device) if device is not None else _device_of(attack.model)
    images, _, _ = craft_cell(attack, data, data.labels, device, batch_size, seed, progress)
    return images


def evaluate_transfer(adv: torch.Tensor, data: ImageSet, targets: Union[str, Dict[str, Any]] = "digits",
             surrogate: Union[str, Sequence[str], None] = None, device: Any = "cpu", batch_size: int = 64,
             progress: bool = True) -> "pandas.DataFrame":
    """How an adversarial set transfers: one row per target with results.csv's columns ``target``,
    ``target_model``, ``role``, ``clean_acc``, ``asr`` (with its Wilson interval), ``asr_clean_correct``
    and the counts, computed as a cell computes them.

    Args:
        adv: uint8 NCHW images (from :func:`craft_set`), or [0,1] floats, which are rounded to 8 bits
            first as a cell stores them.
        data: the clean set ``adv`` was crafted from (its labels).
        targets: a zoo's config name or a mapping (:func:`load_zoo`).
        surrogate: the model name(s) the set was crafted on: those targets (and an LGV set's base)
            are white-box, so that the black-box mean never counts them.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from flatbench.cell.evaluation import TargetModels, evaluate_target
    from flatbench.cell.recording import target_role
    from flatbench.cell.dist import World
    from flatbench.measures.transfer import transfer_counts
    from flatbench.core.quantize import quantize

    if adv.dtype != torch.uint8:
        adv = quantize(adv)
    if adv.shape != data.images.shape:
        raise ValueError(f"evaluate: {tuple(adv.shape)} adversarial images for a data set of {tuple(data.images.shape)}")
    names = [surrogate] if isinstance(surrogate, str) else list(surrogate or [])
    device = torch.device(device)
    models, rows = TargetModels(names, {}, device, data), []
    for key, entry in tqdm(load_zoo(targets).items(), desc="evaluate", unit="target", disable=not progress):
        pt = evaluate_target(models.get(entry), data, adv, device, batch_size, World())
        clean, pred = (torch.as_tensor(pt[c].to_numpy().copy()) for c in ("clean_pred", "adv_pred"))
        rows.append({"target": key, "target_model": entry["model"], "role": target_role(entry, names),
                     **transfer_counts(clean, pred, data.labels)})
    return pd.DataFrame(rows)


def _device_of(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
