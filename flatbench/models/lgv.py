"""LGV surrogates: models of one architecture collected along SGD at a high constant
learning rate, attacked one collected model per step.

Gubri et al., "LGV: Boosting Adversarial Example Transferability from Large Geometric Vicinity",
ECCV 2022 (arXiv 2207.13129). The paper's surrogate is K = 40 checkpoints of a pretrained ResNet-50
taken 4 per epoch over 10 epochs of SGD at a constant learning rate of 0.05; its attack is I-FGSM
(TransferAttack's ``ensemble/lgv.py``: MI-FGSM, μ = 1) whose every forward pass goes to the next
model of the list, shuffled once (``LightEnsemble(order="shuffle", n_grad=1)``).

Two names load one (:class:`LgvSource`):

* ``digits-resnet-lgv``, ``digits-resnet-lgv-2``, ``digits-resnet-lgv-3`` - three collection runs of
  10 collected models of the pinned ``digits-resnet``, pinned (:mod:`flatbench.models.lgv_digits`).
* ``lgv:DIR`` or ``lgv:ARCH@DIR`` - the official LGV release's layout, ``*.pt`` files each holding
  ``{"state_dict": ...}`` (``DIR`` may be the release's root, then
  ``models/ImageNet/resnet50/cSGD/seed0`` is read), loaded into the timm architecture ARCH (default:
  the directory name after ``ImageNet/``, else ``resnet50``) with ImageNet preprocessing. When the
  directory holds a ``SHA256SUMS`` file, every checkpoint is checked against it at startup; the
  run's cell.json records the digest of the whole set either way.

How the loop uses a :class:`~flatbench.models.collected.CollectedModels` surrogate: step t of a batch takes its gradient through
collected model ``order[(start + t) mod K]``, ``order`` the shuffled list and ``start`` a keyed draw per
batch. TransferAttack's counter runs on across batches (batch b starts at b·T mod K); a keyed
start gives each batch the same kind of window without making it depend on the batches crafted
before it (resume, sharding). Its plain forward (evaluation, ``predict``) averages the K logits.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from flatbench.core.registry import ConfigError
from flatbench.models.collected import CollectedModels
from flatbench.models.lgv_digits import BASE, PINNED_NAME, REVISIONS, RUNS, load_pinned_lgv
from flatbench.models.testbed.pinning import pinned_sidecar
from flatbench.models.sources import ModelSource

__all__ = ["PINNED_NAME", "RUNS", "LgvSource", "load_pinned_lgv"]
RELEASE_LAYOUT = Path("models/ImageNet/resnet50/cSGD/seed0")
RELEASE_URL = "https://figshare.com/ndownloader/files/36698862"   # the LGV release (TransferAttack's lgv.py names it)


# ---------------------------------------------------------------- lgv:DIR, the official release's layout

def parse_lgv(name: str):
    """``lgv:DIR`` / ``lgv:ARCH@DIR`` -> (timm architecture, the directory of ``*.pt`` files)."""
    body = name[len("lgv:"):]
    arch, _, where = body.rpartition("@") if "@" in body else ("", "", body)
    root = Path(where).expanduser()
    folder = root / RELEASE_LAYOUT if (root / RELEASE_LAYOUT).is_dir() else root
    if not arch:
        parts = folder.resolve().parts
        # The release's models were trained with torchvision's recipe: timm's tv_in1k tag has its preprocessing.
        arch = (parts[parts.index("ImageNet") + 1] if "ImageNet" in parts[:-1] else "resnet50") + ".tv_in1k"
    return arch, folder


def release_files(name: str) -> List[Path]:
    """The checkpoints of ``lgv:DIR``, sorted as TransferAttack globs them, checked against the
    directory's ``SHA256SUMS`` when it has one; a ConfigError names what is wrong."""
    from flatbench.models.testbed import file_sha256

    _, folder = parse_lgv(name)
    files = sorted(folder.glob("*.pt"))
    if not files:
        raise ConfigError(f"{name!r}: no *.pt checkpoints in {folder}; download the LGV release ({RELEASE_URL}) and "
                          f"unzip it there (it keeps them under {RELEASE_LAYOUT})")
    sums = folder / "SHA256SUMS"
    if sums.is_file():
        want = {line.split()[-1].lstrip("*"): line.split()[0] for line in sums.read_text().splitlines() if line.strip()}
        for f in files:
            if f.name not in want:
                raise ConfigError(f"{name!r}: {f.name} is not listed in {sums}")
            if file_sha256(f) != want[f.name]:
                raise ConfigError(f"{name!r}: {f} fails its SHA-256 check against {sums} (corrupt or changed)")
    return files


def set_digest(files: Sequence[Path]) -> str:
    """One SHA-256 for a set of checkpoints: of their ``sha256  name`` lines, as sha256sum prints them."""
    import hashlib

    from flatbench.models.testbed import file_sha256

    lines = "".join(f"{file_sha256(f)}  {f.name}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def load_release(name: str, seed: int = 0, preprocess: str = "own") -> CollectedModels:
    """``lgv:DIR``: every checkpoint into the timm architecture, wrapped with its ImageNet preprocessing."""
    from flatbench.models.hub import load_hub_model, read_checkpoint

    arch, _ = parse_lgv(name)
    models = []
    for f in release_files(name):
        model = load_hub_model(arch, pretrained=False, preprocess=preprocess)
        state = read_checkpoint(f)
        missing, unexpected = model.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(f"{name!r}: checkpoint {f} does not match timm {arch}: missing {list(missing)[:5]}, "
                              f"unexpected {list(unexpected)[:5]}")
        models.append(model)
    return CollectedModels(models, seed=seed, name=name)


class LgvSource(ModelSource):
    """``digits-resnet-lgv`` (pinned collected models) and ``lgv:DIR`` (the LGV release's layout); see the module."""

    name = "lgv"

    def claims(self, name: str) -> bool:
        return name in RUNS or name.startswith("lgv:")

    def known(self):
        return list(RUNS)

    def derived_from(self, name):
        return [BASE] if name in RUNS else []

    def weights_revision(self, name):
        return REVISIONS.get(name, 1)

    def load(self, name, *, zoo_dir=None, seed=None, preprocess="own", **_):
        seed = 0 if seed is None else seed
        if name in RUNS:
            return load_pinned_lgv(name, seed=seed)
        return load_release(name, seed=seed, preprocess=preprocess)

    def classes(self, name, label_offset=None, num_classes=None):
        if name in RUNS:
            from flatbench.models.testbed import NUM_CLASSES

            return NUM_CLASSES
        from flatbench.models.hub import declared_classes

        return declared_classes(parse_lgv(name)[0], label_offset, num_classes)

    def check_available(self, name, pretrained=True):
        if name not in RUNS:
            release_files(name)

    def weights_file(self, name, zoo_dir=None):
        from flatbench.models.testbed import PINNED_DIR

        if name in RUNS:
            return PINNED_DIR / f"{name}.safetensors"
        _, folder = parse_lgv(name)
        return folder if folder.is_dir() else None

    def listing(self, name):
        if name in RUNS:
            accs = pinned_sidecar(name)["test_acc"]
            return {"source": "lgv", "family": f"{BASE} x{len(accs)}", "test_acc": round(sum(accs) / len(accs), 3),
                    "cached": True}
        arch, folder = parse_lgv(name)
        return {"source": "lgv", "family": arch, "test_acc": None, "cached": bool(sorted(folder.glob("*.pt"))),
                "hint": f"the LGV release, from {RELEASE_URL}"}


# Known differences from TransferAttack's ensemble/lgv.py (docs/methods.md prints them under LGV).
DIFFERENCES = (
    "The port's LightEnsemble counter runs on across batches (batch b starts at b·T mod K); here each batch starts "
    "at a keyed place in the same kind of cycle, so a batch's collected models do not depend on the batches crafted before "
    "it (resume, sharding). With the order and the start shared, one batch equals the port (tests/test_lgv.py).",
    "The port shuffles with Python's unseeded random.shuffle, so its order changes from run to run; here it is a fixed shuffle (seeded with 0), the same on every machine.",
    "The port starts from a random δ (LGV's random_start=True); every flatbench attack starts at δ = 0.",
    "Every forward pass advances the port's counter, so an estimator with several passes per step (PGN, VMI) would "
    "see several collected models in one step there; here a step's passes all go through that step's collected model.",
)


def describe_surrogate(name: str) -> str:
    """The line ``flatbench describe`` adds for an LGV surrogate (nothing is built)."""
    if name in RUNS:
        k = int(pinned_sidecar(name)["recipe"]["k"])
    else:
        k = len(sorted(parse_lgv(name)[1].glob("*.pt")))
    return (f"f at step t: the LGV collected model order[(s + t − 1) mod K] of {name} (K = {k}), order a fixed shuffle (seeded "
            "with 0), s a keyed start per batch (the run's seed); f's plain forward (evaluation) averages the K logits")
