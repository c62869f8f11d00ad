"""The report mirrored to W&B, in the group its sweep's cells logged into."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from flatbench.core.layout import CellLayout


def report_group(dirs: Sequence[Path]) -> Optional[str]:
    """The W&B group of the sweep the report reads: the group its cells logged into (their
    logger.group, else <name>-<sweep dir name>); None when the cells are not one sweep's."""
    import yaml   # Hydra's saved files, read as written (interpolations unresolved)

    from flatbench.cell.loggers import sweep_group

    groups = set()
    for d in dirs:
        for hydra_yaml in sorted(Path(d).rglob(".hydra/hydra.yaml")):
            cell = hydra_yaml.parent.parent
            hc = (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {})
            if hc.get("mode") != "MULTIRUN":
                groups.add(None)
                continue
            sweep_dir = hc["sweep"]["dir"]  # as the cells saw it (unresolved: the parent)
            sweep_dir = sweep_dir if "${" not in str(sweep_dir) else str(cell.parent)
            cfg = yaml.safe_load((cell / CellLayout.CONFIG).read_text()) or {}
            groups.add((cfg.get("logger") or {}).get("group") or sweep_group(cfg.get("name", "default"), sweep_dir))
    return groups.pop() if len(groups) == 1 else None


def log_wandb(rep: dict, project: str, group: Optional[str] = None) -> None:
    """Mirror the report's tables to W&B (offline unless WANDB_MODE says otherwise), into the
    sweep's group (see :func:`report_group`)."""
    import os

    import wandb

    run = wandb.init(project=project, job_type="report", mode=os.environ.get("WANDB_MODE", "offline"),
                     dir=str(rep["out"]), group=group, name=f"report-{group}" if group else None,
                     reinit="finish_previous")
    try:
        clean = lambda d: d.astype(object).where(d.notna(), None)  # noqa: E731
        run.log({"report/results": wandb.Table(dataframe=clean(rep["df"]))})
        run.log({"report/table": wandb.Table(dataframe=clean(rep["table"].reset_index()))})
        for name in ("compare", "mcnemar"):
            if name in rep:
                run.log({f"report/{name}": wandb.Table(dataframe=clean(rep[name]))})
        for name, path in rep["paths"].items():
            if name.endswith(".png"):
                run.log({f"report/{name[:-4]}": wandb.Image(str(path))})
    finally:
        run.finish()
