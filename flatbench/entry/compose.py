"""The config directory and composing a config outside a Hydra app, for the command line,
its subcommands, ``flatbench list``, the tests and the scripts."""
from __future__ import annotations

from pathlib import Path
from typing import List

from omegaconf import DictConfig

# The configs ship inside the package (the repository's top-level conf/ links here), so a wheel
# install finds them; users add their own with --config-dir (searched before these).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")   # flatbench/conf


def compose(overrides: List[str], hydra: bool = False) -> DictConfig:
    """The config that ``flatbench OVERRIDES`` would run (errors are raised, not printed);
    ``hydra=True`` keeps the ``hydra`` node (the sweeper's params, the launcher)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from flatbench.entry.config import register_schema

    register_schema()
    # Inside a running Hydra job (the sweep's progress line composes the sweep's cells) the
    # app's own GlobalHydra must survive: put it back afterwards.
    previous = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return hydra_compose("config", overrides=overrides, return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().hydra = previous
