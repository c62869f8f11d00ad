"""The three directory layouts flatbench writes, each named by one class and nowhere else
(tests/test_structure.py fails on a file name of theirs spelled in another module):

    CellLayout   a cell's output directory (Hydra's job dir): cell.json, results.csv, ...,
                 error.json, and Hydra's own .hydra/{config,overrides}.yaml
    SweepLayout  a sweep directory (Hydra's sweep dir): the cells' numbered directories, the
                 progress record .flatbench/progress.json, Hydra's multirun.yaml, the report's default report/
    CacheLayout  the cache (``paths.cache_dir``): adversarial sets by cell id (adv/<id>/, with
                 batches/, eval/, steps/<t>/ and meta.json), clean predictions (clean/), crafting rates
                 (rates.json)

Pure names and paths: no file is read or written here (cell/directory.py reads and writes a cell,
store.py the adversarial store, progress.py and planning.py their records).
"""
from __future__ import annotations

from pathlib import Path


class CellLayout:
    """The files of one cell's directory."""

    META = "cell.json"             # written last: it marks the cell finished
    RESULTS = "results.csv"
    PREDICTIONS = "predictions.csv"
    SNAPSHOTS = "snapshots.csv"
    SNAPSHOT_PREDICTIONS = "predictions_steps.csv"
    ADV = "adv.safetensors"
    FLATNESS = "flatness.csv"
    LANDSCAPE_CSV = "landscape.csv"
    LANDSCAPE_PNG = "landscape.png"
    SKIPPED = "skipped.csv"
    ERROR = "error.json"
    # Hydra's record of the job (written by Hydra, read by flatbench evaluate, the failure summary, W&B)
    HYDRA = Path(".hydra")
    OVERRIDES = HYDRA / "overrides.yaml"
    CONFIG = HYDRA / "config.yaml"

    # What a cell writes into its directory (cell.json first to go, last to come).
    FILES = (META, RESULTS, PREDICTIONS, SNAPSHOTS, SNAPSHOT_PREDICTIONS, ADV, FLATNESS, LANDSCAPE_CSV,
             LANDSCAPE_PNG, SKIPPED, ERROR)


class SweepLayout:
    """The files of a sweep directory besides its cells'."""

    MULTIRUN = "multirun.yaml"     # Hydra's record of the sweep (its overrides and sweeper)
    PROGRESS = Path(".flatbench") / "progress.json"
    PROGRESS_LOCK = Path(".flatbench") / ".progress.lock"
    REPORT = "report"

    @classmethod
    def progress(cls, sweep_dir) -> Path:
        return Path(sweep_dir) / cls.PROGRESS

    @classmethod
    def progress_lock(cls, sweep_dir) -> Path:
        return Path(sweep_dir) / cls.PROGRESS_LOCK

    @classmethod
    def report(cls, sweep_dir) -> Path:
        return Path(sweep_dir) / cls.REPORT


class CacheLayout:
    """The cache directory's layout (``paths.cache_dir``)."""

    ADV_DIR = "adv"
    STEPS_DIR = "steps"
    BATCHES_DIR = "batches"
    EVAL_DIR = "eval"
    CLEAN_DIR = "clean"
    RATES = "rates.json"
    FULL_SET = CellLayout.ADV      # a stored set's whole-set file has the cell directory's name
    STORE_META = "meta.json"       # beside it: what the set was crafted with
    CRAFTING = "crafting.json"     # in batches/: the chunk and memory format of the finished batches

    @classmethod
    def adv(cls, cache_dir, cell_id: str, step=None) -> Path:
        """A cell's adversarial store; ``step``: the examples after that step (snapshots)."""
        d = Path(cache_dir) / cls.ADV_DIR / cell_id
        return d if step is None else d / cls.STEPS_DIR / f"{int(step):06d}"

    @classmethod
    def clean(cls, cache_dir, name: str) -> Path:
        """A target's cached clean predictions, one CSV per (target, data, device type)."""
        return Path(cache_dir) / cls.CLEAN_DIR / name

    @classmethod
    def rates(cls, cache_dir) -> Path:
        return Path(cache_dir) / cls.RATES
