"""The digits testbed: data split, zoo accuracy, training determinism, and the cache."""
import json
import logging

import torch

from flatbench.data import DATASETS
from flatbench.models import TESTBED
from flatbench.models.testbed import cache_status, load_testbed, sidecar, train


def test_digits_split_is_stratified_and_deterministic():
    test, train_ = DATASETS.build("digits"), DATASETS.build("digits", split="train")
    assert len(test) + len(train_) == 1797 and len(test) == 540
    assert test.images.shape[1:] == (1, 32, 32) and test.images.dtype == torch.uint8
    assert set(test.ids).isdisjoint(train_.ids)
    counts = torch.bincount(test.labels, minlength=10).float()
    assert counts.min() >= 0.95 * counts.mean()
    assert DATASETS.build("digits").digest() == test.digest()


def test_zoo_families_and_accuracy(trained_zoo, zoo_dir):
    families = {spec.family for spec in TESTBED.values()}
    assert len(TESTBED) >= 6 and len(families) == len(TESTBED)
    test = DATASETS.build("digits")
    total_train = 0.0
    for name, model in trained_zoo.items():
        meta = sidecar(name, zoo_dir)
        assert meta["test_acc"] >= 95.0, (name, meta["test_acc"])
        total_train += meta["train_seconds"]
        with torch.no_grad():
            acc = 100 * (model(test.floats()).argmax(1) == test.labels).float().mean()
        assert abs(float(acc) - meta["test_acc"]) < 0.01
        assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert total_train < 180, total_train


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
