"""Results: long-format rows (one per cell × target), the CSV, and the W&B mirror.

The CSV in each cell directory is the source of truth; W&B only mirrors it.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd

from .io import atomic_write_text

log = logging.getLogger(__name__)

# Leading columns, in this order; everything else (flattened part settings) follows.
COLUMNS = [
    "experiment", "dataset", "n_images", "surrogate", "attack", "optimizer", "estimator", "beta", "r", "zeta", "n_samples",
    "lookahead", "normalize", "combine", "transforms", "eps", "steps", "alpha", "decay", "norm", "targeted", "target_rule", "seed",
    "cell_id", "target", "target_model", "role", "clean_acc", "asr", "asr_ci_low", "asr_ci_high", "asr_clean_correct", "n_fooled",
    "n_clean_correct", "n_fooled_clean_correct", "linf_mean", "l2_mean", "craft_seconds", "images_per_second",
    "grad_evals", "version",
]

# Columns of a row that measure or label it rather than set up its cell.
MEASURES = ("target", "target_model", "role", "clean_acc", "asr", "asr_ci_low", "asr_ci_high", "asr_clean_correct",
            "n_fooled", "n_clean_correct", "n_fooled_clean_correct", "linf_mean", "l2_mean", "craft_seconds",
            "images_per_second", "grad_evals", "chunk", "memory_format")
LABELS = ("cell_id", "experiment", "version")  # not settings: the hash of the settings, a name, the code's version
# The settings that make up "the attack" (McNemar compares attacks on otherwise equal cells);
# so do the parts' flattened settings (dim.resize_rate, estimator.normalize, ...), see attack_columns.
ATTACK_SETTINGS = ("attack", "optimizer", "estimator", "beta", "r", "zeta", "n_samples", "lookahead", "normalize", "combine",
                   "transforms",
                   "decay")


def setting_columns(columns) -> List[str]:
    """Every column that is a setting of the cell (all of them enter cell_id), in column order."""
    return [c for c in columns if c not in MEASURES and c not in LABELS
            and not (c.startswith("flat_") and c != "flat_rho")]


def attack_columns(columns) -> List[str]:
    return [c for c in setting_columns(columns) if c in ATTACK_SETTINGS or ("." in c and not c.startswith("data."))]


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    lead = [c for c in COLUMNS if c in df.columns]
    return df[lead + sorted(c for c in df.columns if c not in lead)]


def write_csv(path: Path, rows: List[Dict[str, Any]]) -> pd.DataFrame:
    df = order_columns(pd.DataFrame(rows))
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_text(path, buf.getvalue())
    return df


def sweep_group(name: str, sweep_dir: str) -> str:
    """The W&B group of a sweep's cells and of its report: the experiment name and the sweep
    directory's own name (by default the time the sweep started)."""
    return f"{name}-{Path(str(sweep_dir)).name}"


class Logger:
    """Receives the resolved config at start and each cell's rows; always closed in finally.

    ``sweep`` (multirun cells only): the sweep's group, the job number and the overrides that
    made this cell (what the user swept)."""

    def start(self, config: Dict[str, Any], run_dir: Path, name: str, sweep: Optional[Dict[str, Any]] = None) -> None:
        pass

    def log_rows(self, df: pd.DataFrame) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


class WandbLogger(Logger):
    def __init__(self, project: str = "flatbench", entity: Optional[str] = None, group: Optional[str] = None,
                 mode: Optional[str] = None, tags: Optional[List[str]] = None):
        self.project, self.entity, self.group = project, entity, group
        self.mode = mode or os.environ.get("WANDB_MODE", "offline")
        self.tags = list(tags or [])
        self.run = None

    def start(self, config, run_dir, name, sweep=None):
        import wandb

        group = self.group
        if sweep:
            # One group per sweep (a given logger.group wins); the swept settings name the run.
            group = group or sweep["group"]
            name = f"{name} [{' '.join(sweep['overrides'])}]" if sweep["overrides"] else name
            config = {**config, "sweep": sweep}
        self.run = wandb.init(project=self.project, entity=self.entity, group=group, name=name,
                              config=config, mode=self.mode, dir=str(run_dir), tags=self.tags,
                              reinit="finish_previous")

    def log_rows(self, df):
        import wandb

        if self.run is None:
            return
        self.run.log({"results": wandb.Table(dataframe=df.astype(object).where(df.notna(), None))})
        self.run.log({f"asr/{t}": float(a) for t, a in zip(df["target"], df["asr"])})
        for t, a in zip(df["target"], df["asr"]):
            self.run.summary[f"asr/{t}"] = float(a)

    def finish(self, failed=False):
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None


def build_logger(node: Dict[str, Any]) -> Logger:
    from .registry import Registry

    node = dict(node or {"name": "csv"})
    name = node.pop("name", "csv")
    reg = Registry("logger")
    reg.register("csv", lambda: Logger(), doc="CSV only")
    reg.register("wandb", WandbLogger, doc="CSV, mirrored to Weights & Biases")
    return reg.build(name, **node)
