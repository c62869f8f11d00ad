"""What one cell reads, typed: the settings that the entry loads from the config once
(:func:`flatbench.entry.settings.load_settings`) and hands to :func:`flatbench.cell.run_cell`, the
plan and ``flatbench describe``. Plain dataclasses, so nothing below the entry sees the config."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROLES = {"normal": "black-box", "adversarial": "adv-trained", "defense": "defense"}
ALL_ROLES = ("white-box", *ROLES.values())
# What a target-zoo entry may hold besides its key (see conf/targets/*.yaml).
ENTRY_KEYS = ("model", "role", "label_offset", "num_classes", "input_size", "pretrained", "defense")


@dataclass
class CellSettings:
    """The resolved semantic settings of one cell (lengths in 1/255 units, as in the CSV)."""

    data: Dict[str, Any]
    surrogate: List[str]
    optimizer: str
    optimizer_kwargs: Dict[str, Any]
    estimator: str
    estimator_kwargs: Dict[str, Any]
    transforms: Dict[str, Dict[str, Any]]
    eps: float
    steps: int
    alpha: float
    norm: str
    targeted: bool
    target_rule: str
    seed: int
    n_images: Optional[int]
    rules: Dict[str, str] = field(default_factory=dict)   # the lengths given as rules of eps (describe shows them)
    budget: Optional[Dict[str, Any]] = None   # what budget=B resolved to (Fit.record()); not a setting: a label
    snapshots: Tuple[int, ...] = ()           # steps kept besides T (evaluation, not a setting: not in cell_id)
    spec: Any = None                          # the AttackSpec these came from (flatbench/attacks/spec.py): builds the attack


@dataclass(frozen=True)
class RunSettings:
    """How the cell runs. ``pretrained``, ``preprocess``, ``quantize`` and ``batch_size`` also enter
    the cell id (:func:`flatbench.cell.plan.hashed_settings` says why); the rest does not."""

    name: str
    pretrained: bool
    preprocess: str
    quantize: str
    batch_size: int
    chunk: Any
    memory_budget_mb: Optional[float]
    amp: Optional[str]
    channels_last: Any
    compile: bool
    device: str
    progress: bool
    save_images: bool
    force: bool
    objective: str


@dataclass(frozen=True)
class Paths:
    """Where the cell's files go (``conf/paths``)."""

    output_dir: Path
    cache_dir: Optional[Path]
    zoo_dir: Optional[Path]
    tuning_file: Optional[str]


@dataclass(frozen=True)
class Settings:
    """Everything one cell reads, resolved from its config by :func:`load_settings`."""

    cell: CellSettings
    run: RunSettings
    paths: Paths
    targets: Dict[str, Dict[str, Any]]   # target key -> entry (model, role, ...): parse_targets
    flatness: Any                        # FlatnessSettings ([0,1] units), or None when off
    flatness_node: Optional[Dict[str, Any]]   # the flatness group as configured (cell.json), None when off
    logger: Dict[str, Any]
    config: Callable[[], Dict[str, Any]]   # the whole composed config, resolved (the logger's record of the run)
    choices: Dict[str, str]              # the config file chosen in each group (Hydra's runtime), for error messages

    def build_attack(self, model=None):
        """The cell's attack: its spec (:mod:`flatbench.attacks.spec`) with the run's sizing settings."""
        return self.cell.spec.build(model, chunk=self.run.chunk, memory_budget_mb=self.run.memory_budget_mb,
                                    amp=self.run.amp, channels_last=self.run.channels_last,
                                    tuning_file=self.paths.tuning_file)

    def model_options(self, progress: Optional[bool] = None) -> Dict[str, Any]:
        """The keyword arguments of :func:`flatbench.models.load_model` for this cell's models."""
        return dict(zoo_dir=self.paths.zoo_dir, progress=self.run.progress if progress is None else progress,
                    pretrained=self.run.pretrained, preprocess=self.run.preprocess)
