"""Generated image trees in the layouts the data sets read (NIPS17, TransferAttack, ImageFolder)."""
from pathlib import Path


def write_png(path: Path, seed: int, size: int = 40) -> Path:
    """A smooth random RGB image (not noise, so JPEG and median filters act as on photos)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


SYNSETS = {0: "n01440764", 1: "n02123045", 2: "n04591713"}
SYNSET_LABELS = {"n01440764": 0, "n02123045": 281, "n04591713": 907}


def make_layouts(root: Path, n: int = 6) -> dict:
    """Tiny NIPS17, TransferAttack and ImageFolder trees of generated PNGs."""
    nips = root / "nips17"
    rows = ["ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,Pretrained"]
    for i in range(n):
        write_png(nips / "images" / f"img{i:03d}.png", i)
        rows.append(f"img{i:03d},u,0,0,1,1,{1 + 37 * i},{500 + i},1")
    (nips / "images.csv").write_text("\n".join(rows) + "\n")
    ta = root / "transferattack"
    rows = ["filename,label,targeted_label"]
    for i in range(n):
        write_png(ta / "images" / f"{i}.png", 100 + i)
        rows.append(f"{i}.png,{37 * i},{900 - i}")
    (ta / "labels.csv").write_text("\n".join(rows) + "\n")
    folder = root / "imagenet_val"
    for i in range(n):   # three ImageNet-1k synsets: tench (0), tabby cat (281), wine bottle (907)
        write_png(folder / SYNSETS[i % 3] / f"ILSVRC_{i}.png", 200 + i, size=50)
    return {"nips17": nips, "transferattack": ta, "imagefolder": folder, "root": root}
