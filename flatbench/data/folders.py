"""ImageNet-compatible data sets read from disk.

* ``nips17``: the NIPS 2017 adversarial competition dev set - ``images.csv`` with
  ``ImageId``, ``TrueLabel`` (1..1000, background = 0) and ``TargetClass``; the images are
  ``images/<ImageId>.png``. Labels are shifted by ``label_shift`` (default −1) into the
  0..999 space of 1000-class models.
* ``transferattack``: TransferAttack's layout - ``labels.csv`` with
  ``filename,label[,targeted_label]`` (0..999) and an ``images/`` folder.
* ``imagefolder``: the ImageNet validation layout, one folder per class. A folder named by a
  WordNet id (``n02123045``) gets that synset's ImageNet-1k index (tabby cat is 281), whatever
  subset of the 1000 classes is present; the list is timm's (``timm.data.ImageNetInfo``). Any
  other folder name is an error unless a ``classes`` file maps it: one class per line, labelled
  by its line number (0-based), or ``NAME INDEX`` per line.

Every image is decoded once, converted to RGB and, with ``resize: true``, resized at load to
``image_size`` (``interpolation``, antialiased; with ``crop_pct`` set, the shorter side is
first resized to image_size/crop_pct and the centre cropped, as in ImageNet evaluation).
With ``resize: false`` every image must already be image_size × image_size.

A missing file, an unreadable image, a label out of range, a duplicate id or an empty set
fails before any crafting with the file and the row; ``skip_bad_images: true`` logs and
skips bad rows instead, and the list goes into the cell's ``skipped.csv``.
"""
from __future__ import annotations

import csv
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from flatbench.core.registry import INTERPOLATIONS, ConfigError, check_range
from flatbench.data.base import DATASETS, ImageSet

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class DataError(ConfigError):
    """Bad input data: the message names the file and the row."""


def _check_common(root, image_size, interpolation, crop_pct, num_classes) -> Path:
    if root is None or str(root) in ("", "???"):
        raise ConfigError("data.root is not set; point it at the data set folder (data.root=/path/to/dir)")
    root = Path(str(root)).expanduser()
    if not root.is_dir():
        import os

        where = os.environ.get("FLATBENCH_DATA")
        now = f"FLATBENCH_DATA is {where!r}" if where else "FLATBENCH_DATA is not set: data/ where flatbench starts"
        raise DataError(f"data.root: no such directory: {root}; the ImageNet-compatible sets are read from "
                        f"$FLATBENCH_DATA/<set> ({now}); set FLATBENCH_DATA or data.root=DIR. Where each set comes "
                        "from, and its layout: docs/imagenet.md, section 'Getting the data'")
    if int(image_size) < 8:
        raise ConfigError(f"data.image_size={image_size} is out of range; allowed >= 8")
    check_range("data.interpolation", interpolation, interpolation in INTERPOLATIONS, " | ".join(INTERPOLATIONS))
    if crop_pct is not None and not 0 < float(crop_pct) <= 1:
        raise ConfigError(f"data.crop_pct={crop_pct} is out of range; allowed (0, 1] or null")
    if int(num_classes) < 2:
        raise ConfigError(f"data.num_classes={num_classes} is out of range; allowed >= 2")
    return root


def decode(path: Path, image_size: int, interpolation: str, resize: bool, crop_pct: Optional[float]) -> torch.Tensor:
    """One image file -> uint8 CHW RGB at image_size (raises DataError naming the file)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"unreadable or truncated image {path}: {exc}") from None
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    h, w = x.shape[-2:]
    if not resize:
        if (h, w) != (image_size, image_size):
            raise DataError(f"image {path} is {w}x{h}, but data.resize=false requires {image_size}x{image_size}")
        return x
    z = x[None].float()
    if crop_pct is not None:
        short = int(round(image_size / float(crop_pct)))
        scale = short / min(h, w)
        z = _resize(z, (max(short, round(h * scale)), max(short, round(w * scale))), interpolation)
        top, left = (z.shape[-2] - image_size) // 2, (z.shape[-1] - image_size) // 2
        z = z[..., top:top + image_size, left:left + image_size]
    elif (h, w) != (image_size, image_size):
        z = _resize(z, (image_size, image_size), interpolation)
    return z.round().clamp(0, 255).to(torch.uint8)[0]


def _resize(z: torch.Tensor, size, mode: str) -> torch.Tensor:
    kw = {"align_corners": False, "antialias": True} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(z, size=size, mode=mode, **kw)


def _assemble(name: str, rows: Sequence[Tuple[str, Path, int, Optional[int], str]], image_size: int,
              interpolation: str, resize: bool, crop_pct: Optional[float], num_classes: int,
              skip_bad_images: bool, num_workers: int, meta: dict) -> ImageSet:
    """rows: (id, path, label, target or None, where) with ``where`` = 'file:row' for messages."""
    skipped: List[dict] = []
    seen = {}
    good = []
    for rid, path, label, target, where in rows:
        problem = None
        if rid in seen:
            problem = f"duplicate image id {rid!r} (first at {seen[rid]})"
        elif not 0 <= label < num_classes:
            problem = f"label {label} out of range 0..{num_classes - 1}"
        elif target is not None and not 0 <= target < num_classes:
            problem = f"target class {target} out of range 0..{num_classes - 1}"
        if problem:
            if not skip_bad_images:
                raise DataError(f"{where}: {problem}")
            skipped.append({"image_id": rid, "where": where, "reason": problem})
            continue
        seen[rid] = where
        good.append((rid, path, label, target, where))

    def load(row):
        try:
            return decode(row[1], image_size, interpolation, resize, crop_pct), None
        except DataError as exc:
            if not skip_bad_images:
                raise DataError(f"{row[4]}: {exc}") from None
            return None, str(exc)

    with ThreadPoolExecutor(max_workers=max(1, int(num_workers))) as pool:
        decoded = list(pool.map(load, good))
    images, keep = [], []
    for row, (img, err) in zip(good, decoded):
        if img is None:
            skipped.append({"image_id": row[0], "where": row[4], "reason": err})
        else:
            images.append(img)
            keep.append(row)
    for s in skipped:
        log.warning("skipped %s (%s): %s", s["image_id"], s["where"], s["reason"])
    if not keep:
        raise DataError(f"{name}: the selection is empty (no usable images under {meta['root']})")
    has_t = [r[3] is not None for r in keep]
    target_classes = torch.tensor([r[3] for r in keep]) if all(has_t) else None
    return ImageSet(name, torch.stack(images), torch.tensor([r[2] for r in keep]), [r[0] for r in keep],
                    num_classes, target_classes, dict(meta, skipped=skipped))


def _read_csv(path: Path, required: Sequence[str]) -> List[dict]:
    if not path.is_file():
        raise DataError(f"missing label file: {path}")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            missing = [c for c in required if c not in fields]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}; found {fields}")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None


def _int(value, where: str, col: str) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise DataError(f"{where}: column {col!r} is not an integer: {value!r}") from None


def _csv_layout(root: Path, csv_name: str, id_col: str, label_col: str, target_col: str, image_of,
                shift: int) -> List[tuple]:
    """Rows (id, path, label, target, 'file:row') of a label-CSV layout; labels shifted by ``shift``."""
    csv_path = root / csv_name
    rows = []
    for i, r in enumerate(_read_csv(csv_path, [id_col, label_col]), start=2):
        where = f"{csv_path}:{i}"
        rid = str(r[id_col]).strip()
        tgt = r.get(target_col)
        rows.append((rid, image_of(rid), _int(r[label_col], where, label_col) + shift,
                     None if tgt in (None, "") else _int(tgt, where, target_col) + shift, where))
    return rows


@DATASETS.register("nips17")
def nips17(root: Optional[str] = None, image_size: int = 299, interpolation: str = "bilinear", resize: bool = True,
           crop_pct: Optional[float] = None, label_shift: int = -1, num_classes: int = 1000,
           skip_bad_images: bool = False, num_workers: int = 4) -> ImageSet:
    """NIPS 2017 dev set (images.csv: ImageId, TrueLabel 1..1000, TargetClass; images/<ImageId>.png)."""
    root = _check_common(root, image_size, interpolation, crop_pct, num_classes)
    rows = _csv_layout(root, "images.csv", "ImageId", "TrueLabel", "TargetClass",
                       lambda rid: root / "images" / f"{rid}.png", label_shift)
    return _assemble("nips17", rows, int(image_size), interpolation, resize, crop_pct, int(num_classes),
                     skip_bad_images, num_workers, {"root": str(root)})


@DATASETS.register("transferattack")
def transferattack(root: Optional[str] = None, image_size: int = 224, interpolation: str = "bilinear",
                   resize: bool = True, crop_pct: Optional[float] = None, num_classes: int = 1000,
                   skip_bad_images: bool = False, num_workers: int = 4) -> ImageSet:
    """TransferAttack layout (labels.csv: filename,label[,targeted_label], 0..999; images/)."""
    root = _check_common(root, image_size, interpolation, crop_pct, num_classes)
    rows = _csv_layout(root, "labels.csv", "filename", "label", "targeted_label",
                       lambda fn: root / "images" / fn, 0)
    return _assemble("transferattack", rows, int(image_size), interpolation, resize, crop_pct, int(num_classes),
                     skip_bad_images, num_workers, {"root": str(root)})


SYNSET = re.compile(r"^n[0-9]{8}$")


def imagenet_synsets() -> List[str]:
    """ImageNet-1k's 1000 WordNet ids in index order, as timm ships them."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def _synset_index(root: Path, folders: Sequence[str], num_classes: int) -> dict:
    """Folder name -> ImageNet-1k index, for folders named by their synset (any subset of the 1000)."""
    index = {s: i for i, s in enumerate(imagenet_synsets())}
    for name in folders:
        if name not in index:
            what = "is not one of ImageNet-1k's 1000 synsets" if SYNSET.match(name) else "is not a WordNet id (nXXXXXXXX)"
            raise DataError(f"{root / name}: class folder {name!r} {what}; name each folder by its ImageNet-1k synset, "
                            "or give data.classes=FILE (one class per line, labelled by its line number, or NAME INDEX)")
    if folders and num_classes != len(index):
        raise DataError(f"{root}: synset folders are labelled by their ImageNet-1k index (0..{len(index) - 1}), but "
                        f"data.num_classes={num_classes}; set data.num_classes={len(index)} or give data.classes=FILE")
    return index


def _class_file(classes: str) -> dict:
    """A classes file: one name per line (its 0-based line number is the label), or NAME INDEX per line."""
    cpath = Path(classes).expanduser()
    if not cpath.is_file():
        raise DataError(f"data.classes: no such file: {cpath}")
    index = {}
    for i, line in enumerate((ln.split() for ln in cpath.read_text().splitlines() if ln.strip())):
        if len(line) == 1:
            index[line[0]] = i
        elif len(line) == 2 and line[1].lstrip("-").isdigit():
            index[line[0]] = int(line[1])
        else:
            raise DataError(f"{cpath}: line {i + 1}: expected NAME or NAME INDEX, got {' '.join(line)!r}")
    return index


@DATASETS.register("imagefolder")
def imagefolder(root: Optional[str] = None, image_size: int = 224, interpolation: str = "bilinear",
                resize: bool = True, crop_pct: Optional[float] = 0.875, classes: Optional[str] = None,
                num_classes: int = 1000, per_class: Optional[int] = None, skip_bad_images: bool = False,
                num_workers: int = 4) -> ImageSet:
    """ImageNet-val layout: ROOT/<synset>/<image>; class index = sorted synsets or the ``classes`` file."""
    root = _check_common(root, image_size, interpolation, crop_pct, num_classes)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    index = _class_file(classes) if classes else _synset_index(root, folders, int(num_classes))
    rows = []
    for syn in folders:
        if syn not in index:
            raise DataError(f"{root / syn}: folder is not a class in {classes}")
        files = sorted(p for p in (root / syn).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        for p in files[:per_class] if per_class else files:
            rows.append((f"{syn}/{p.name}", p, index[syn], None, str(p)))
    if not rows:
        raise DataError(f"imagefolder: the selection is empty (no images under {root}/<class>/)")
    return _assemble("imagefolder", rows, int(image_size), interpolation, resize, crop_pct, int(num_classes),
                     skip_bad_images, num_workers, {"root": str(root)})
