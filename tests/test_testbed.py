"""The digits testbed: data split, zoo accuracy, training determinism, and the cache."""
import json
import logging
import shutil

import pandas as pd
import pytest

import torch

from flatbench.data import DATASETS
from flatbench.models import TESTBED
from flatbench.models.testbed import ARCHITECTURES, cache_status, load_testbed, sidecar, train
from helpers import ROOT, command, run


def test_digits_split_is_stratified_and_deterministic():
    test, train_ = DATASETS.build("digits"), DATASETS.build("digits", split="train")
    assert len(test) + len(train_) == 1797 and len(test) == 540
    assert test.images.shape[1:] == (1, 32, 32) and test.images.dtype == torch.uint8
    assert set(test.ids).isdisjoint(train_.ids)
    counts = torch.bincount(test.labels, minlength=10).float()
    assert counts.min() >= 0.95 * counts.mean()
    assert DATASETS.build("digits").digest() == test.digest()


def test_zoo_families_and_accuracy(trained_zoo, zoo_dir):
    families = {spec.family for spec in ARCHITECTURES.values()}
    assert len(ARCHITECTURES) >= 6 and len(families) == len(ARCHITECTURES)
    test = DATASETS.build("digits")
    for name, model in trained_zoo.items():
        meta = sidecar(name, zoo_dir)
        assert meta["test_acc"] >= 95.0, (name, meta["test_acc"])
        with torch.no_grad():
            acc = 100 * (model(test.floats()).argmax(1) == test.labels).float().mean()
        assert abs(float(acc) - meta["test_acc"]) < 0.01
        assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_pinned_weights_ship_with_the_package_and_are_checked(tmp_path):
    from flatbench.models.testbed import PINNED_DIR, file_sha256, load_pinned
    from flatbench.core.registry import ConfigError

    total = 0
    for name in TESTBED:
        meta = json.loads((PINNED_DIR / f"{name}.json").read_text())
        assert file_sha256(PINNED_DIR / f"{name}.safetensors") == meta["sha256"]
        assert {"recipe", "seed", "data_hash", "test_acc", "arch"} <= set(meta) and meta["seed"] == TESTBED[name].seed
        total += (PINNED_DIR / f"{name}.safetensors").stat().st_size
    assert total < 21 * 2**20  # 20.1 MB: the 18 instances, the two defended CNNs and the two surrogates trained with SAM
    # A changed byte is an error naming the check, never a silent retrain.
    bad = tmp_path / "zoo"
    shutil.copytree(PINNED_DIR, bad)
    f = bad / "digits-cnn.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="SHA-256"):
        load_pinned("digits-cnn", bad)
    (bad / "digits-mlp.json").unlink()
    with pytest.raises(ConfigError, match="missing"):
        load_pinned("digits-mlp", bad)
    assert not list(bad.glob("*.lock"))  # nothing was trained there


@pytest.mark.long   # took 25 s or more in a clean-clone .ci/run
def test_retraining_through_the_cli_matches_the_pinned_model(tmp_path, zoo_dir):
    """`flatbench-zoo train` retrains for real; the result is as accurate as the pinned model
    (within a point), and `paths.zoo_dir` makes a run use it."""

    out = tmp_path / "trained"
    p = command(["flatbench-zoo", "train", "digits-mlp", "digits-mlp-2", "--out", str(out), "--no-progress"], timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    # Instance 2 trains from its own seed and is stored as it is pinned, in float16.
    line2 = next(ln for ln in p.stdout.splitlines() if ln.startswith("digits-mlp-2"))
    assert abs(float(line2.split()[1].rstrip("%")) - float(line2.split()[2].rstrip("%"))) <= 1.0
    meta2 = json.loads((out / "digits-mlp-2.json").read_text())
    assert meta2["seed"] == 1 and meta2["dtype"] == "float16"
    from safetensors.torch import load_file as _load
    assert {v.dtype for v in _load(out / "digits-mlp-2.safetensors").values()} == {torch.float16}
    (out / "digits-mlp-2.json").unlink()
    (out / "digits-mlp-2.safetensors").unlink()
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("digits-mlp"))
    acc, pinned = (float(v.rstrip("%")) for v in line.split()[1:3])
    assert abs(acc - pinned) <= 1.0
    # The bit-identical column, recounted from the two weight files.
    from safetensors.torch import load_file
    from flatbench.models.testbed import PINNED_DIR
    new, ref = load_file(out / "digits-mlp.safetensors"), load_file(PINNED_DIR / "digits-mlp.safetensors")
    same = new.keys() == ref.keys() and all(torch.equal(new[k], ref[k]) for k in new)
    assert line.split()[4] == ("yes" if same else "no"), (line, same)
    meta = json.loads((out / "digits-mlp.json").read_text())
    from flatbench.models.testbed import file_sha256
    assert meta["sha256"] == file_sha256(out / "digits-mlp.safetensors") and abs(meta["test_acc"] - acc) < 0.01
    r = run(["flatbench", "surrogate=digits-mlp", "n_images=8", "targets=digits_small", "~targets.digits-cnn",
             "progress=false", f"paths.zoo_dir={out}", f"hydra.run.dir={tmp_path / 'cell'}"], None, tmp_path)
    assert "training" not in r.stderr  # it used the weights trained above, the one model it needs
    assert len(pd.read_csv(tmp_path / "cell" / "results.csv")) == 1 and sorted(p.name for p in out.glob("*.json")) == \
        ["digits-mlp.json"]
    v = command(["flatbench-zoo", "verify"], timeout=600)
    assert v.returncode == 0 and v.stdout.count("ok ") == len(TESTBED)


def test_three_independent_instances_of_every_architecture_are_pinned():
    """NAME-2 and NAME-3 are NAME's architecture and recipe from training seeds 1 and 2, stored in float16,
    within 1.5 points of instance 1's test accuracy; they compute in float32, their accuracy is the sidecar's,
    and their weights are not instance 1's."""
    from safetensors.torch import load_file
    from flatbench.models import load_model
    from flatbench.models.testbed import PINNED_DIR, instance_name, instance_of, pinned_sidecar

    test = DATASETS.build("digits")
    docs = (ROOT / "docs" / "testbed.md").read_text()
    for arch in ARCHITECTURES:
        ref, one = pinned_sidecar(arch), load_model(arch).state_dict()
        for k in (2, 3):
            name = instance_name(arch, k)
            meta = pinned_sidecar(name)
            assert instance_of(name) == (arch, k) and meta["seed"] == k - 1
            assert meta["recipe"] == ref["recipe"] and meta["arch"] == ref["arch"] and meta["family"] == ref["family"]
            # Within 1.5 points of instance 1, or docs/testbed.md names the instance and says why not.
            assert abs(meta["test_acc"] - ref["test_acc"]) <= 1.5 or f"`{name}`" in docs, (name, meta["test_acc"])
            stored = load_file(PINNED_DIR / f"{name}.safetensors")
            assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
            model = load_model(name)
            assert {p.dtype for p in model.parameters()} == {torch.float32}
            with torch.no_grad():
                acc = 100 * float((model(test.floats()).argmax(1) == test.labels).float().mean())
            assert abs(acc - meta["test_acc"]) < 0.01, (name, acc, meta["test_acc"])
            assert not all(torch.equal(one[n], v) for n, v in model.state_dict().items())


def test_training_is_deterministic():
    a, _ = train("digits-mlp", seed=3, progress=False)
    b, _ = train("digits-mlp", seed=3, progress=False)
    c, _ = train("digits-mlp", seed=4, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_cache_reused_when_sidecar_matches_and_retrained_when_not(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="flatbench.models.testbed")
    load_testbed("digits-mlp", zoo_dir=tmp_path, progress=False)
    assert "training digits-mlp (not cached)" in caplog.text
    weights = tmp_path / "digits-mlp.safetensors"
    stamp = weights.stat().st_mtime_ns
    caplog.clear()
    load_testbed("digits-mlp", zoo_dir=tmp_path, progress=False)
    assert "training" not in caplog.text and weights.stat().st_mtime_ns == stamp
    side = tmp_path / "digits-mlp.json"
    meta = json.loads(side.read_text())
    meta["data_hash"] = "something-else"
    side.write_text(json.dumps(meta))
    assert "data_hash" in cache_status("digits-mlp", tmp_path, 0)
    caplog.clear()
    load_testbed("digits-mlp", zoo_dir=tmp_path, progress=False)
    assert "sidecar differs in data_hash" in caplog.text
    assert cache_status("digits-mlp", tmp_path, 0) is None
    assert cache_status("digits-mlp", tmp_path, 1) is not None  # another seed is another model


def test_adversarially_trained_targets_are_accurate_and_robust(tmp_path):
    """digits-cnn-at and digits-cnn-ens-at: clean accuracy >= 90%, their sidecars' white-box PGD-20 accuracy
    recomputed, PGD-AT far more robust than the plain CNN; a cell on targets=digits_defended gives them
    role adversarial beside the input-transformation defenses."""
    from flatbench.models import load_model
    from flatbench.models.testbed import accuracy, pinned_sidecar
    from flatbench.models.testbed.adversarial import robust_accuracy

    test = DATASETS.build("digits")
    x, y = test.floats(), test.labels
    plain = robust_accuracy(load_model("digits-cnn"), x, y)
    for name in ("digits-cnn-at", "digits-cnn-ens-at"):
        meta, model = pinned_sidecar(name), load_model(name)
        assert meta["test_acc"] >= 90 and abs(accuracy(model, x, y) - meta["test_acc"]) < 0.01, name
        rob = robust_accuracy(model, x, y, eps=meta["adversarial"]["eps"])
        assert abs(rob - meta["robust_acc_pgd20"]) <= 0.5, (name, rob, meta["robust_acc_pgd20"])
    assert pinned_sidecar("digits-cnn-at")["robust_acc_pgd20"] >= plain + 30, plain
    run(["flatbench", "surrogate=digits-cnn", "targets=digits_defended", "method=ifgsm", "steps=3", "n_images=16",
         "progress=false", f"hydra.run.dir={tmp_path / 'cell'}"], None, tmp_path)
    roles = pd.read_csv(tmp_path / "cell" / "results.csv").set_index("target")["role"].to_dict()
    assert roles == {"digits-cnn-at": "adv-trained", "digits-cnn-ens-at": "adv-trained", "digits-cnn-bn-jpeg": "defense",
                     "digits-cnn-bn-bitdepth": "defense", "digits-cnn-bn-median": "defense", "digits-cnn-bn-rp": "defense"}
