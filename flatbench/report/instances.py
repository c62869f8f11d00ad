"""Independently trained instances of one architecture (``--over instance``).

The digits testbed has three instances of every architecture (``digits-cnn``, ``digits-cnn-2``,
``digits-cnn-3``: one recipe, three training seeds), and per instance a target zoo whose keys are the
architectures (``targets=digits``, ``digits_2``, ``digits_3``). A cell crafted on instance k and
evaluated on instance k's zoo is one replicate of the whole testbed. ``--over instance`` reads the
surrogate as its architecture and adds its instance as the ``instance`` column, so that the outputs
summarise over instances as ``--over seed`` does over seeds: a setting's ASR as mean ± sd over the
instances, a flatness correlation with one point per setting of an architecture, and ``--versus``
rows that pool the instances' discordant images. Only the report's view changes: the merged
results.csv keeps every cell's own names.
"""
from __future__ import annotations

import pandas as pd

from flatbench.models.testbed import has_instances, instance_of


def _surrogate_instance(surrogate: str) -> tuple:
    """(architecture names joined by '+', instance) of a surrogate column, one instance for all members."""
    parts = [instance_of(n) for n in str(surrogate).split("+")]
    instances = {k for _, k in parts}
    if len(instances) > 1:
        raise ValueError(f"--over instance: the ensemble surrogate {surrogate} mixes instances {sorted(instances)}")
    return "+".join(a for a, _ in parts), instances.pop()


def by_instance(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``surrogate`` as its architecture and an ``instance`` column; a ValueError when a
    cell was evaluated on an instance of another replicate than its surrogate's (its black-box mean
    would mix instances; a model trained once, such as a defended target, belongs to every replicate)."""
    if "instance" in df.columns:
        raise ValueError("--over instance: the results already have an 'instance' column")
    arch = {s: _surrogate_instance(s) for s in df["surrogate"].unique()}
    models = df["target_model"] if "target_model" in df.columns else df["target"]
    for s, t in zip(df["surrogate"], models):
        k, j = arch[s][1], instance_of(str(t))[1]
        if has_instances(str(t)) and j != k:   # a model trained once (a defended target) serves every instance
            raise ValueError(f"--over instance: cells crafted on {s} (instance {k}) were evaluated on {t} "
                             f"(instance {j}); evaluate instance k's surrogate on instance k's zoo "
                             f"(targets=digits for 1, digits_2, digits_3), or report without --over instance")
    out = df.assign(surrogate=df["surrogate"].map(lambda s: arch[s][0]),
                    instance=df["surrogate"].map(lambda s: arch[s][1]))
    # The instance is a setting: beside the seed, where the table's columns put the settings.
    cols = list(df.columns)
    at = cols.index("seed") + 1 if "seed" in cols else len(cols)
    return out[cols[:at] + ["instance"] + cols[at:]]
