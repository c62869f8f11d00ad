"""The results schema: which columns a cell's rows have, in which order, and which of them
are settings. Built from the parts' declarations (:mod:`flatbench.attacks.parts`), so a new
part's parameters become columns without a list to edit here. Writing the rows is
:mod:`flatbench.cell.loggers`' job; this module only says what they are.
"""
from __future__ import annotations

from typing import Any, Dict, List

import pandas as pd

from flatbench.attacks import ESTIMATORS, OPTIMIZERS

# The gradient-norm penalty's parameters (PGN, GNP, GNP-TA declare the same ones) are bare
# columns, as is the momentum decay; another part's parameter is PART.NAME (estimator.NAME,
# optimizer.NAME, dim.prob, ...), unless it shares a bare column's name and meaning (VMI's zeta).
ESTIMATOR_COLUMNS = tuple(ESTIMATORS.get("pgn").names())
OPTIMIZER_COLUMNS = tuple(OPTIMIZERS.get("mifgsm").names())

# Leading columns, in this order; everything else (flattened part settings) follows.
COLUMNS = [
    "experiment", "dataset", "n_images", "surrogate", "attack", "optimizer", "estimator", *ESTIMATOR_COLUMNS,
    "transforms", "eps", "steps", "step", "alpha", *OPTIMIZER_COLUMNS, "norm", "targeted", "target_rule", "seed",
    "cell_id", "target", "target_model", "role", "clean_acc", "asr", "asr_ci_low", "asr_ci_high", "asr_clean_correct",
    "n_fooled", "n_clean_correct", "n_fooled_clean_correct", "linf_mean", "l2_mean", "psnr_mean", "ssim_mean",
    "craft_seconds", "images_per_second", "grad_evals", "budget", "version",
]

# Columns of a row that measure or label it rather than set up its cell.
MEASURES = ("step", "target", "target_model", "role", "clean_acc", "asr", "asr_ci_low", "asr_ci_high", "asr_clean_correct",
            "n_fooled", "n_clean_correct", "n_fooled_clean_correct", "linf_mean", "l2_mean", "psnr_mean", "ssim_mean",
            "craft_seconds",
            "images_per_second", "grad_evals", "chunk", "memory_format", "adv_digest")
# Not settings: the hash of the settings, a name, the budget that was asked for (the settings it resolved
# to are the columns), the code's version and where the cell was computed (flatbench/cell/provenance.py).
LABELS = ("cell_id", "experiment", "budget", "version", "torch_version", "git_commit", "hardware", "kernels")
# The settings that make up "the attack" (McNemar compares attacks on otherwise equal cells);
# so do the parts' flattened settings (dim.resize_rate, estimator.normalize, ...), see attack_columns.
ATTACK_SETTINGS = ("attack", "optimizer", "estimator", *ESTIMATOR_COLUMNS, "transforms", *OPTIMIZER_COLUMNS)


def setting_columns(columns) -> List[str]:
    """Every column that is a setting of the cell (all of them enter cell_id), in column order."""
    return [c for c in columns if c not in MEASURES and c not in LABELS
            and not (c.startswith("flat_") and c != "flat_rho")]


def attack_columns(columns) -> List[str]:
    return [c for c in setting_columns(columns) if c in ATTACK_SETTINGS or ("." in c and not c.startswith("data."))]


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    lead = [c for c in COLUMNS if c in df.columns]
    return df[lead + sorted(c for c in df.columns if c not in lead)]


def settings_columns(semantic: Dict[str, Any], label: str, dataset: str, cell_id: str,
                     experiment: str = "") -> Dict[str, Any]:
    """The setting columns of a cell's rows, from the settings hashed into its id: every setting
    that enters cell_id is a column, so a table can tell any two cells apart."""
    opt_name, opt = semantic["optimizer"]
    est_name, est = semantic["estimator"]
    tf_labels, tf_cols = [], {}
    for name, params in semantic["transforms"]:
        tf_labels.append(name + "(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")")
        tf_cols.update({f"{name}.{k}": v for k, v in params.items()})
    targeted = semantic["targeted"]
    cols = {
        "experiment": experiment, "dataset": dataset, "n_images": semantic["n_images"],
        "surrogate": "+".join(semantic["surrogate"]), "attack": label, "optimizer": opt_name, "estimator": est_name,
        **{k: est.get(k) for k in ESTIMATOR_COLUMNS},
        "transforms": "+".join(tf_labels) or "none", "eps": semantic["eps"], "steps": semantic["steps"],
        "alpha": semantic["alpha"], **{k: opt.get(k) for k in OPTIMIZER_COLUMNS}, "norm": semantic["norm"],
        "targeted": targeted, "target_rule": semantic["target_rule"] if targeted else "", "seed": semantic["seed"],
        "cell_id": cell_id, "batch_size": semantic["batch_size"], "amp": semantic["amp"] or "none",
        "pretrained": semantic["pretrained"], "device": semantic["device"], "data_digest": semantic["data_digest"],
        "preprocess": semantic["preprocess"], "quantize": semantic["quantize"],
    }
    cols.update({f"optimizer.{k}": v for k, v in opt.items() if k not in OPTIMIZER_COLUMNS})
    cols.update({f"estimator.{k}": v for k, v in est.items() if k not in ESTIMATOR_COLUMNS})
    cols.update({f"data.{k}": v for k, v in semantic["data"].items() if k != "name"})
    cols.update(tf_cols)
    if semantic.get("weights_revision"):   # only where a surrogate's weights were republished (old ids stay)
        cols["weights_revision"] = " ".join(f"{n}:{r}" for n, r in semantic["weights_revision"].items())
    return cols
