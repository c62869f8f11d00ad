"""The ``flatbench`` command: a Hydra app in which one job is one cell.

    flatbench                                   # the default cell on the digits testbed
    flatbench method=pgn surrogate=digits-resnet eps=16
    flatbench -m method=mifgsm,pgn,gnp surrogate=digits-cnn,digits-vit   # a sweep
    flatbench -m experiment=digits              # the default experiment (make run)
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .config import register_schema

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

log = logging.getLogger("flatbench")


def _print_table(df) -> None:
    cols = ["attack", "surrogate", "eps", "target", "role", "clean_acc", "asr"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.1f}"))


def task(cfg: DictConfig) -> None:
    from .cell import run_cell

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    df = run_cell(cfg, out_dir)
    _print_table(df)
    log.info("results: %s", out_dir / "results.csv")


def main() -> None:
    register_schema()
    # W&B and tqdm write a lot to a non-interactive terminal; keep runs readable.
    os.environ.setdefault("WANDB_SILENT", "true")
    hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")(task)()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
