"""The digits testbed zoo: six small classifiers from distinct families, three independently trained
instances of each, with pinned weights.

The weights ship with the package (``flatbench/models/zoo/NAME.safetensors``: 6.6 MB for the six
instance-1 models in float32, 6.6 MB for the twelve of instances 2 and 3 in float16, 4.4 MB for the
adversarially trained digits-cnn-at and digits-cnn-ens-at (:mod:`.adversarial`); the LGV snapshots
of digits-resnet beside them, :mod:`flatbench.models.lgv`, add 1.6 MB)
beside a ``NAME.json`` sidecar: SHA-256 of the file, architecture, recipe, seed, data hash,
test accuracy, where it was trained. Loading checks the hash and the data hash; a mismatch is
an error, never a silent retrain, so every machine attacks the same zoo and prints the same
table. Training stays available and real: ``flatbench-zoo train`` retrains into a directory
of the user's choice, and ``paths.zoo_dir=DIR`` (or ``FLATBENCH_ZOO``) selects those
weights; a model missing there is trained on first use and cached with its sidecar, reused
only while the sidecar matches (otherwise retrained, and the log says why).
"""
from __future__ import annotations

from flatbench.models.testbed.architectures import (ARCHITECTURES, IMAGE_SIZE, INSTANCES, MEAN, NUM_CLASSES, STD, TESTBED, Recipe, Spec,
                            has_instances, instance_name, instance_of)
from flatbench.models.testbed.pinning import (PINNED_DIR, cache_status, default_zoo_dir, file_sha256, load_pinned, load_testbed,
                      pinned_sidecar, save_trained, sidecar)
from flatbench.models.testbed.training import TRAIN_CODE_VERSION, accuracy, sidecar_key, train

__all__ = ["ARCHITECTURES", "INSTANCES", "has_instances", "instance_name", "instance_of", "IMAGE_SIZE", "MEAN", "NUM_CLASSES", "STD", "TESTBED", "Recipe", "Spec", "PINNED_DIR", "cache_status",
           "default_zoo_dir", "file_sha256", "load_pinned", "load_testbed", "pinned_sidecar", "save_trained", "sidecar",
           "TRAIN_CODE_VERSION", "accuracy", "sidecar_key", "train"]
