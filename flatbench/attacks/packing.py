"""Packing: several batches of a cell crafted in one call of the loop, so that a forward
holds as many images as the chunk allows when one batch alone leaves it room. At the paper
experiments' batch 25, I-FGSM, MI-FGSM and GNP put 25 images in a forward that holds 256 on a
GPU (0.27-0.47 of the bare limit on the H200); at batch 8 on 2 CPU cores, I-FGSM on
digits-resnet crafted at about half its batch-64 speed.

What stays each batch's own: its keyed draws (the input transforms draw per batch with the
batch's own key, :meth:`.context.StepContext.grad`), its checkpoint file and its place in the
store. Every step of the loop acts on each image alone (the loss is a sum, MI's normalisation
and the projection are per image), so a packed call computes what the batches would alone. What
it changes is the kernels' batch size, and with it the floating-point summation order, as
another chunk does (:mod:`.sizing`): where the kernels are batch-invariant the images are equal
bit for bit, elsewhere a near-zero gradient component may flip its sign.

The rule, like the chunk's (so the same command crafts the same images whatever the load):
``pack_size = chunk // (batch × copies × width)``, at least 1, where width is the estimator's
widest forward (its neighbours) and copies the transforms'. Not packed (1):
- an estimator that draws batch-wide keys itself (PGN's, VMI's and GRA's neighbours, RAP, EMI,
  MEF, ANDA, CWA): its draw for a batch depends on the batch's shape, so a packed draw would
  differ (:attr:`.estimators.base.Estimator.packable`); those fill the chunk with neighbours;
- an LGV surrogate: each batch starts at its own place in the cycle of its collected models;
- a batch of one image with a mixing transform (Admix draws its partners from the data set).
"""
from __future__ import annotations

from typing import Hashable, Optional, Sequence, Tuple

from flatbench.attacks.model_state import per_step_models


def packable(attack) -> bool:
    """Whether the attack may craft several batches in one call (see the module docstring)."""
    return bool(attack.estimator.packable) and per_step_models(attack.model) is None


def pack_size(attack, batch_size: int) -> int:
    """How many batches of ``batch_size`` one call crafts together, from the resolved chunk."""
    mixing = batch_size == 1 and any(hasattr(t, "with_partners") for t in attack.transforms)
    if not packable(attack) or attack.chunk is None or mixing:
        return 1
    return max(1, int(attack.chunk) // (int(batch_size) * attack.copies * attack.estimator.width))


def check_packed(attack, x, seed: Hashable, packed: Optional[Sequence]) -> Tuple[Hashable, Optional[tuple]]:
    """(seed, packed) for the loop: one batch is its own seed, several must be packable and fill x."""
    if packed is None:
        return seed, None
    packed = tuple((s, int(n)) for s, n in packed)
    if sum(n for _, n in packed) != x.shape[0] or any(n < 1 for _, n in packed):
        raise ValueError(f"packed: the batches' sizes {[n for _, n in packed]} do not add up to the {x.shape[0]} images of x")
    if len(packed) == 1:
        return packed[0][0], None
    if not packable(attack):
        raise ValueError(f"packed: {attack.label} cannot craft several batches in one call (its estimator draws "
                         "batch-wide keys, or the surrogate is an LGV set); see flatbench.attacks.packing")
    return seed, packed
