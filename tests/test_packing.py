"""Batch packing (issue 36, section 1): when one batch leaves the chunk room, several of a cell's
batches are crafted in one call of the loop, each keeping its own keyed draws, checkpoint and place
in the store. Counted by a forward hook, never timed; the speed is in docs/benchmarks.md."""
import pytest
import torch

from flatbench import create_attack
from flatbench.attacks.packing import pack_size
from flatbench.cell.crafting import craft
from flatbench.data import DATASETS
from flatbench.cell.store import AdvStore, load_adv
from helpers import run

SIZES = [4, 4, 3]   # three batches of a cell, the last one short


def _alone_and_packed(attack, x, y):
    """Each batch crafted alone (keyed by its first image), and the three in one packed call."""
    los = [0, 4, 8]
    alone = torch.cat([attack(x[lo:lo + n], y[lo:lo + n], seed=(0, lo)) for lo, n in zip(los, SIZES)])
    packed = attack.trajectory(x, y, seed="ignored", packed=[((0, lo), n) for lo, n in zip(los, SIZES)])[attack.steps]
    return alone, packed


def test_a_packed_call_crafts_what_each_batch_crafts_alone(trained_zoo):
    """I-FGSM and GNP on the digits MLP: bit for bit (a linear layer's kernels give each row the same
    sums at these batch sizes). MI-FGSM+DIM+TIM on the digits CNN: DIM draws per batch with the batch's
    own key, so the views are the same; the convolutions' batch size differs, which may flip a near-zero
    gradient component, as another chunk may (docs/performance.md): at most a few pixels, by a step.
    Broken variant tried: one generator for the packed call (DIM's draw keyed by the first batch only):
    the DIM case then differs in 1,464 of 11,264 pixels."""
    data = DATASETS.build("digits", split="test").subset(11)
    x, y = data.floats(), data.labels
    for method, model in (("ifgsm", "digits-mlp"), ("gnp", "digits-mlp")):
        alone, packed = _alone_and_packed(create_attack(method, trained_zoo[model], eps=32 / 255), x, y)
        assert torch.equal(alone, packed), method
    attack = create_attack("mifgsm", trained_zoo["digits-cnn"], eps=32 / 255, transforms=["dim", "tim"])
    alone, packed = _alone_and_packed(attack, x, y)
    moved = ((alone - packed).abs() > 1e-6).sum().item()
    assert moved <= 0.001 * alone.numel(), moved
    assert (packed - x).abs().max() <= 32 / 255 + 1e-6 and 0 <= packed.min() and packed.max() <= 1


def test_what_draws_batch_wide_keys_is_never_packed(trained_zoo):
    """PGN's neighbours are drawn batch-wide (one draw of the batch's shape per neighbour): a packed
    draw would not be the batches' own. The rule gives it 1; a packed call is refused."""
    x = torch.rand(8, 1, 32, 32)
    pgn = create_attack("pgn", trained_zoo["digits-mlp"], eps=32 / 255, n_samples=2)
    pgn.chunk = 64
    assert pack_size(pgn, 4) == 1
    with pytest.raises(ValueError, match="cannot craft several batches in one call"):
        pgn.trajectory(x, torch.zeros(8, dtype=torch.long), packed=[((0, 0), 4), ((0, 4), 4)])
    ifgsm = create_attack("ifgsm", trained_zoo["digits-mlp"], eps=32 / 255)
    ifgsm.chunk = 64
    assert pack_size(ifgsm, 8) == 8 and pack_size(ifgsm, 25) == 2 and pack_size(ifgsm, 64) == 1
    assert pack_size(create_attack("gnp", trained_zoo["digits-mlp"], eps=32 / 255, transforms=["sim"]), 8) == 1


def test_small_batches_share_forward_passes_and_keep_their_checkpoints(trained_zoo, tmp_path):
    """64 test digits at batch 8 (I-FGSM, T = 10, digits-resnet): the rule's chunk of 64 holds all eight
    batches, so each step is one forward, not eight (a hook counts them), every batch has its own
    checkpoint file, and the set equals an unpacked run's (chunk 8: one batch per forward) up to what
    the convolutions' batch size may flip. Broken variant tried: the pack size left at 1 (80 forwards)."""
    data = DATASETS.build("digits", split="test").subset(64)
    model = trained_zoo["digits-resnet"]
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        stores = {}
        for name, chunk in (("packed", "auto"), ("alone", 8)):
            calls.clear()
            stores[name] = AdvStore(tmp_path, name)
            attack = create_attack("ifgsm", model, eps=32 / 255, chunk=chunk)
            adv, _, crafted = craft(attack, data, data.labels, torch.device("cpu"), 8, 0, False, store=stores[name])
            assert crafted == 8 and len(list(stores[name].batches.glob("*.safetensors"))) == 8
            big = [n for n in calls if n > 2]   # the rule's size count uses forwards of one and two images
            assert big == ([64] * 10 if name == "packed" else [8] * 80), (name, big)
            stores[name] = adv
    finally:
        handle.remove()
    moved = (stores["packed"].int() - stores["alone"].int()).ne(0).sum().item()
    assert moved <= 0.001 * stores["packed"].numel(), moved


def test_the_command_line_packs_and_equals_an_unpacked_run(zoo_dir, tmp_path):
    """Through the command line: I-FGSM on the digits MLP at batch 8 packs eight batches per call
    and gives the images of the same cell with chunk=8 (no room to pack) bit for bit."""
    cell = ["method=ifgsm", "surrogate=digits-mlp", "n_images=64", "batch_size=8", "targets=digits_small",
            "progress=false"]
    p = run(["flatbench", *cell, "hydra.run.dir=packed"], zoo_dir, tmp_path)
    assert "packing 8 batches of 8 images per call (chunk 64)" in p.stdout + p.stderr
    p = run(["flatbench", *cell, "chunk=8", "hydra.run.dir=alone"], zoo_dir, tmp_path)
    assert "packing" not in p.stdout + p.stderr
    assert torch.equal(load_adv(tmp_path / "packed" / "adv.safetensors")[0],
                       load_adv(tmp_path / "alone" / "adv.safetensors")[0])


def test_a_stop_pauses_a_packed_group_and_the_rerun_continues_it(trained_zoo, tmp_path, caplog):
    """SIGTERM in the middle of a group of four packed batches (MI-FGSM, 16 digits at batch 4): the
    group's state is kept under its first batch's start and its last one's end, with the batches it
    holds; the rerun continues the group from that step to the uninterrupted images. Broken variant
    tried: the state saved without its batches (the rerun then refuses it and starts again: the
    log check fails)."""
    import logging

    from flatbench.cell.signals import Stop, StopRequest

    class StopAfter(torch.nn.Module):   # asks the cell to stop during its third forward
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 3:
                stop.request("SIGTERM")
            return self.inner(x)

    data = DATASETS.build("digits", split="test").subset(16)
    model = trained_zoo["digits-cnn"]
    ref, _, _ = craft(create_attack("mifgsm", model, eps=32 / 255, chunk=16), data, data.labels,
                      torch.device("cpu"), 4, 0, False)
    store, stop = AdvStore(tmp_path, "c0ffee"), StopRequest()
    first = create_attack("mifgsm", StopAfter(model), eps=32 / 255, chunk=16)
    with pytest.raises(Stop, match=r"in batch 0:4 4:8 8:12 12:16 after step \d"):
        craft(first, data, data.labels, torch.device("cpu"), 4, 0, False, store=store, stop=stop)
    partial = torch.load(store.partial_path(0, 16), weights_only=True)
    assert partial["batches"] == [[0, 4], [4, 8], [8, 12], [12, 16]] and not list(store.batches.glob("*.safetensors"))
    with caplog.at_level(logging.INFO, logger="flatbench"):
        out, _, crafted = craft(create_attack("mifgsm", model, eps=32 / 255, chunk=16), data, data.labels,
                                torch.device("cpu"), 4, 0, False, store=store)
    assert crafted == 4 and f"batch 0:4 4:8 8:12 12:16: continuing from step {partial['step'] + 1}" in caplog.text
    assert not store.partial_path(0, 16).exists()
    assert torch.equal(out, ref)
