"""The ImageNet path, offline: random-init zoo models, checkpoints, folder data sets, defenses."""
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from flatbench.entry.compose import CONFIG_DIR
from flatbench.data import DATASETS
from flatbench.data.folders import DataError
from flatbench.models import DEFENSES, MissingWeightsError, load_model, read_checkpoint
from flatbench.models.hub import parse_name
from flatbench.core.registry import ConfigError
from helpers import command
from images import SYNSET_LABELS, make_layouts, write_png


ZOOS = ["cnn", "vit", "pgn_paper", "transferattack", "defenses"]
RESOLUTION = {"pgn_paper": 299, "defenses": 299}


def zoo(name):
    return yaml.safe_load((Path(CONFIG_DIR) / "targets" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", ZOOS)
def test_every_zoo_entry_builds_random_init_and_runs_forward(name):
    size = RESOLUTION.get(name, 224)
    x = torch.rand(2, 3, size, size)
    for key, entry in zoo(name).items():
        defense = dict(entry.get("defense") or {})
        if defense.get("name") == "smoothing":
            defense.update(n=4, batch=4)  # the vote, not its cost, is under test
        m = load_model(entry["model"], pretrained=False, defense=defense or None)
        assert not any(p.requires_grad for p in m.parameters()), key
        assert not m.training, key
        with torch.inference_mode():
            out = m(x)
        assert out.shape == (2, 1000), (key, out.shape)
        assert torch.isfinite(out).all(), key


@pytest.mark.parametrize("name,size,interp,mean", [
    ("resnet50.tv_in1k", 224, "bilinear", (0.485, 0.456, 0.406)),
    ("inception_v3.tf_in1k", 299, "bicubic", (0.5, 0.5, 0.5)),
    ("vit_base_patch16_224.augreg_in21k_ft_in1k", 224, "bicubic", (0.5, 0.5, 0.5)),
    ("torchvision:inception_v3.IMAGENET1K_V1", 299, "bilinear", (0.485, 0.456, 0.406)),
    ("torchvision:resnet50.IMAGENET1K_V2", 224, "bilinear", (0.485, 0.456, 0.406)),
])
def test_preprocessing_is_the_models_own(name, size, interp, mean):
    m = load_model(name, pretrained=False)
    assert m.input_size == size and m.interpolation == interp
    assert torch.allclose(m.mean.flatten(), torch.tensor(mean))
    # The wrapper is exactly resize -> normalise -> inner model.
    x = torch.rand(1, 3, 160, 160)
    z = torch.nn.functional.interpolate(x, size=(size, size), mode=interp, align_corners=False)
    with torch.inference_mode():
        assert torch.allclose(m(x), m.model((z - m.mean) / m.std), atol=1e-5)


def test_label_offset_drops_background_class():
    m = load_model("resnet18.a1_in1k", pretrained=False, num_classes=1001, label_offset=1)
    with torch.inference_mode():
        x = torch.rand(1, 3, 64, 64)
        full = m.model((torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)
                        - m.mean) / m.std)
        assert torch.allclose(m(x), full[:, 1:], atol=1e-5)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'resnet50'"):
        parse_name("resnt50.tv_in1k")
    with pytest.raises(ConfigError, match="no pretrained tag.*resnet50.tv_in1k"):
        load_model("resnet50.tv_in1kk", pretrained=False)
    with pytest.raises(ConfigError, match="IMAGENET1K_V2"):
        load_model("torchvision:resnet50.IMAGENET1K_V9", pretrained=False)


def test_offline_missing_weights_error_names_model_and_script(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match=r"resnet18\.a1_in1k.*HF_HUB_OFFLINE.*flatbench fetch-weights"):
        load_model("resnet18.a1_in1k", pretrained=True)
    with pytest.raises(MissingWeightsError, match=r"torchvision:resnet18.*flatbench fetch-weights"):
        load_model("torchvision:resnet18.IMAGENET1K_V1", pretrained=True)


def test_fetch_weights_dry_run_lists_every_model(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path), TORCH_HOME=str(tmp_path))
    p = command(["flatbench", "fetch-weights", "--dry-run", "experiment=pgn_table1"],
                cwd=tmp_path, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    for entry in zoo("pgn_paper").values():
        assert f"missing {entry['model']}" in p.stdout
    assert "7 model(s)" in p.stdout  # the Inc-v3 surrogate is also a target: listed once
    # Offline without the cache, a real fetch fails with the script's error, quickly.
    p = command(["flatbench", "fetch-weights", "targets=digits_small",
                 "surrogate=resnet18.a1_in1k"], cwd=tmp_path, env=env, timeout=300)
    assert p.returncode == 1 and "FAILED  resnet18.a1_in1k" in p.stdout


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_safetensors_and_weights_only(tmp_path):
    from safetensors.torch import save_file

    ref = load_model("resnet18.a1_in1k", pretrained=False)
    state = {k: v.contiguous() for k, v in ref.model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        want = ref(x)
        for f in ("w.safetensors", "w.pt"):
            m = load_model(f"resnet18.a1_in1k@{tmp_path / f}", pretrained=True)  # a checkpoint never touches the hub
            assert torch.equal(m(x), want), f


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_checkpoint_is_refused_and_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": payload}, f)
    with pytest.raises(ConfigError, match="weights_only=True"):
        read_checkpoint(path)
    with pytest.raises(ConfigError, match="refused"):
        load_model(f"resnet18.a1_in1k@{path}")
    assert not marker.exists()


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint not found"):
        load_model(f"resnet18.a1_in1k@{tmp_path / 'nope.safetensors'}")
    from safetensors.torch import save_file
    save_file({"fc.weight": torch.zeros(3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConfigError, match="does not match resnet18"):
        load_model(f"resnet18.a1_in1k@{tmp_path / 'bad.safetensors'}")


# ---------------------------------------------------------------- data sets

def test_layouts_load(layouts):
    n = DATASETS.build("nips17", root=str(layouts["nips17"]), image_size=64)
    assert n.images.shape == (6, 3, 64, 64) and n.images.dtype == torch.uint8
    assert n.labels.tolist() == [37 * i for i in range(6)]          # TrueLabel 1..1000 -> 0..999
    assert n.target_classes.tolist() == [499 + i for i in range(6)]
    assert n.ids[0] == "img000"
    t = DATASETS.build("transferattack", root=str(layouts["transferattack"]), image_size=32, interpolation="bicubic")
    assert t.images.shape == (6, 3, 32, 32) and t.labels.tolist() == [37 * i for i in range(6)]
    assert t.target_classes.tolist() == [900 - i for i in range(6)]
    f = DATASETS.build("imagefolder", root=str(layouts["imagefolder"]), image_size=32)
    assert f.images.shape == (6, 3, 32, 32) and f.target_classes is None
    assert {i.split("/")[0]: y for i, y in zip(f.ids, f.labels.tolist())} == SYNSET_LABELS   # ImageNet-1k's indices
    same = DATASETS.build("nips17", root=str(layouts["nips17"]), image_size=40, resize=False)
    assert same.images.shape[-1] == 40
    with pytest.raises(DataError, match="resize=false requires 64x64"):
        DATASETS.build("nips17", root=str(layouts["nips17"]), image_size=64, resize=False)


def test_center_crop_keeps_the_middle(tmp_path):
    import numpy as np
    from PIL import Image
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, 20:60] = 255  # a white centre square on a wide black image
    (tmp_path / "c0").mkdir()
    Image.fromarray(arr).save(tmp_path / "c0" / "a.png")
    (tmp_path / "classes.txt").write_text("c0\nc1\n")
    s = DATASETS.build("imagefolder", root=str(tmp_path), image_size=20, crop_pct=1.0, num_classes=2,
                       classes=str(tmp_path / "classes.txt"))
    assert s.images.float().mean() > 250  # only the centre 40x40 survives the crop


@pytest.mark.parametrize("kind,mutate,message", [
    ("nips17", lambda d: (d / "images" / "img002.png").unlink(), r"images.csv:4: image file not found: .*img002.png"),
    ("nips17", lambda d: (d / "images" / "img001.png").write_bytes(b"not a png"), r"images.csv:3: unreadable"),
    ("nips17", lambda d: (d / "images" / "img001.png").write_bytes((d / "images" / "img000.png").read_bytes()[:60]),
     r"images.csv:3: unreadable or truncated"),
    ("nips17", lambda d: _edit(d / "images.csv", ",1,500,", ",1001,500,"), r"images.csv:2: label 1000 out of range 0..999"),
    ("nips17", lambda d: _edit(d / "images.csv", "img001,", "img000,"), r"images.csv:3: duplicate image id 'img000'"),
    ("nips17", lambda d: _edit(d / "images.csv", "TrueLabel", "Label"), r"missing column\(s\) \['TrueLabel'\]"),
    ("nips17", lambda d: (d / "images.csv").unlink(), r"missing label file: .*images.csv"),
    ("transferattack", lambda d: _edit(d / "labels.csv", "1.png,37,", "1.png,x,"), r"labels.csv:3: column 'label' is not an integer"),
    ("transferattack", lambda d: (d / "labels.csv").write_text("filename,label\n"), r"the selection is empty"),
    ("imagefolder", lambda d: [p.unlink() for p in d.rglob("*.png")], r"the selection is empty"),
])
def test_bad_data_fails_with_file_and_row(tmp_path, kind, mutate, message):
    d = make_layouts(tmp_path)[kind]
    mutate(d)
    with pytest.raises(DataError, match=message):
        DATASETS.build(kind, root=str(d), image_size=32)


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_skip_bad_images_lists_what_was_skipped(tmp_path):
    d = make_layouts(tmp_path)["nips17"]
    (d / "images" / "img001.png").write_bytes(b"garbage")
    _edit(d / "images.csv", ",75,502,", ",2000,502,")  # img002's label
    s = DATASETS.build("nips17", root=str(d), image_size=32, skip_bad_images=True)
    assert s.ids == ["img000", "img003", "img004", "img005"]
    reasons = {r["image_id"]: r["reason"] for r in s.meta["skipped"]}
    assert set(reasons) == {"img001", "img002"} and "out of range" in reasons["img002"]


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        DATASETS.build("nips17", root=str(tmp_path / "absent"))


# ---------------------------------------------------------------- defenses

@pytest.fixture
def photos(tmp_path):
    from flatbench.data.folders import decode
    imgs = [decode(write_png(tmp_path / f"{i}.png", i, size=48), 48, "bilinear", True, None) for i in range(3)]
    return torch.stack(imgs).float() / 255


def test_jpeg_changes_input_within_range_and_quality_orders_error(photos):
    x = (photos + 0.1 * torch.rand_like(photos)).clamp(0, 1)
    errs = {}
    for q in (10, 75, 95):
        y = DEFENSES.build("jpeg", quality=q)(x)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
        errs[q] = (y - x).abs().mean().item()
    assert errs[10] > errs[75] > errs[95] > 0
    with pytest.raises(ConfigError, match="quality=0"):
        DEFENSES.build("jpeg", quality=0)


def test_bitdepth_has_2_pow_bits_levels(photos):
    y = DEFENSES.build("bitdepth", bits=2)(photos)
    assert y.shape == photos.shape and set(torch.unique(y * 3).round().tolist()) <= {0, 1, 2, 3}
    assert (y - photos).abs().max() <= 1 / 6 + 1e-6


def test_median_removes_salt_noise(photos):
    x = photos.clone()
    x[:, :, 10, 10] = 1.0
    x[:, :, 20, 30] = 0.0
    y = DEFENSES.build("median", kernel_size=3)(x)
    assert y.shape == x.shape
    assert (y[:, :, 10, 10] - photos[:, :, 10, 10]).abs().max() < 0.1
    with pytest.raises(ConfigError, match="odd"):
        DEFENSES.build("median", kernel_size=4)


def test_rp_is_seeded_per_image_and_batch_independent(photos):
    rp = DEFENSES.build("rp", seed=0)
    y = rp(photos)
    assert y.shape == photos.shape and y.min() >= 0 and y.max() <= 1 and not torch.allclose(y, photos)
    assert torch.equal(rp(photos[1:2]), y[1:2])  # same image, other batch -> same draw
    assert torch.equal(DEFENSES.build("rp", seed=0)(photos), y)
    assert not torch.equal(DEFENSES.build("rp", seed=1)(photos), y)


def test_smoothing_is_a_majority_vote(photos):
    from flatbench.models.defenses import Smoothing

    class Threshold(torch.nn.Module):  # class 1 iff mean brightness > 0.5
        def forward(self, x):
            m = x.mean((1, 2, 3))
            return torch.stack([0.5 - m, m - 0.5], 1)

    bright = torch.full((1, 3, 8, 8), 0.6)
    dark = torch.full((1, 3, 8, 8), 0.4)
    sm = Smoothing(Threshold(), sigma=0.1, n=50, batch=16, seed=0)
    votes = sm(torch.cat([bright, dark]))
    assert votes.sum(1).tolist() == [50, 50] and votes.argmax(1).tolist() == [1, 0]
    assert torch.equal(sm(torch.cat([bright, dark])), votes)
    with pytest.raises(ConfigError, match="sigma"):
        Smoothing(Threshold(), sigma=0)


def test_unknown_defense_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'jpeg'"):
        DEFENSES.build("jpg")


def test_data_sets_and_dim_accept_the_same_interpolations(layouts):
    """One list of resize modes (registry.INTERPOLATIONS) for the data sets and DIM, one message form."""
    from flatbench import create_attack
    from flatbench.core.registry import INTERPOLATIONS, ConfigError

    import re

    allowed = re.escape("allowed: " + " | ".join(INTERPOLATIONS))
    with pytest.raises(ConfigError, match=rf"data\.interpolation='cubic' is out of range; {allowed}$"):
        DATASETS.build("transferattack", root=str(layouts["transferattack"]), image_size=32, interpolation="cubic")
    with pytest.raises(ConfigError, match=rf"transforms\.dim\.interpolation='cubic' is out of range; {allowed}$"):
        create_attack("dim", torch.nn.Identity(), eps=16 / 255, interpolation="cubic")
    for mode in INTERPOLATIONS:
        DATASETS.build("transferattack", root=str(layouts["transferattack"]), image_size=32, interpolation=mode)
        create_attack("dim", torch.nn.Identity(), eps=16 / 255, interpolation=mode)
