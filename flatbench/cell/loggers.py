"""Where a cell's rows go: the CSV (the source of truth, in each cell directory) and the W&B
mirror. What the rows are is :mod:`flatbench.cell.columns`."""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd

from flatbench.cell.columns import order_columns
from flatbench.core.io import atomic_write_text
from flatbench.core.registry import Registry

log = logging.getLogger(__name__)

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


LOGGERS = Registry("logger")
LOGGERS.register("csv", lambda: Logger(), doc="CSV only")
LOGGERS.register("wandb", WandbLogger, doc="CSV, mirrored to Weights & Biases")


def build_logger(node: Dict[str, Any]) -> Logger:
    node = dict(node or {"name": "csv"})
    name = node.pop("name", "csv")
    return LOGGERS.build(name, **node)
