"""``flatbench export CELL_DIR --png OUT``: a cell's adversarial set as PNG files that any tool reads.

OUT gets TransferAttack's layout: ``OUT/images/<image id>.png`` (8-bit RGB, the stored set exactly)
and ``OUT/labels.csv`` (``filename,label`` and, for a targeted cell, ``targeted_label``). So

* TransferAttack evaluates it with ``python main.py --eval --input_dir OUT --output_dir OUT/images``;
* flatbench reads it back as a data set: ``data=transferattack data.root=OUT data.resize=false
  data.image_size=SIZE data.num_classes=K``, and a target's clean predictions there are the
  adversarial predictions stored with the cell.

An image id that is a path (``n01440764/ILSVRC2012_val_00000293.JPEG``) becomes one file name
(``n01440764__ILSVRC2012_val_00000293.png``); two ids that would share a name are an error.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path
from typing import List, Optional

from flatbench.core.registry import ConfigError


def png_name(image_id: str) -> str:
    """The PNG file name of an image id: its extension dropped, path separators and odd characters as '_'."""
    stem = re.sub(r"\.(png|jpe?g|bmp|webp|tiff?)$", "", str(image_id), flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem.replace("/", "__")) + ".png"


def export_png(cell_dir: Path, out: Path) -> int:
    """Write the cell's set under ``out`` (module docstring); returns the number of images."""
    import pandas as pd
    from PIL import Image

    from flatbench.core.io import atomic_write_bytes, atomic_write_text
    from flatbench.cell.store import load_adv, read_whole
    from flatbench.cell.directory import CellDir

    cell = CellDir(cell_dir)
    if not cell.adv.exists():
        raise ConfigError(f"{cell_dir}: no adversarial set ({cell.adv.name}); export reads a finished cell's directory "
                          "(run it with save_images=true)")
    if not cell.predictions.exists():
        raise ConfigError(f"{cell_dir}: no {cell.predictions.name}, so no labels to write beside the images")
    stored = read_whole(cell.adv, load_adv)
    if stored is None:
        raise ConfigError(f"{cell.adv} does not read back whole (set aside); rerun the cell to recraft it")
    images, ids = stored
    pred = pd.read_csv(cell.predictions, dtype={"image_id": str})
    first = pred[pred["target"] == pred["target"].iloc[0]].set_index("image_id")
    names = [png_name(i) for i in ids]
    if len(set(names)) != len(names):
        raise ConfigError(f"{cell_dir}: two image ids give one file name; export needs distinct ids")
    targeted = bool((first["attack_target"] != first["label"]).any())
    rows = ["filename,label" + (",targeted_label" if targeted else "")]
    for img, image_id, name in zip(images, ids, names):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        atomic_write_bytes(out / "images" / name, buf.getvalue())
        row = first.loc[str(image_id)]
        rows.append(f"{name},{int(row['label'])}" + (f",{int(row['attack_target'])}" if targeted else ""))
    atomic_write_text(out / "labels.csv", "\n".join(rows) + "\n")
    return len(ids)


def export_main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="flatbench export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cell_dir", type=Path, help="a finished cell's directory (its adv.safetensors and predictions.csv)")
    p.add_argument("--png", type=Path, required=True, metavar="OUT", help="where to write images/ and labels.csv")
    args = p.parse_args(argv)
    try:
        n = export_png(args.cell_dir, args.png)
    except (ConfigError, OSError) as exc:
        print(f"flatbench export: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(f"wrote {n} images to {args.png / 'images'} and their labels to {args.png / 'labels.csv'}")
    return 0
