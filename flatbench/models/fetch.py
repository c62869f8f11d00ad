"""The weights a list of model names needs, fetched into the hub caches (or, with ``dry_run``, listed
with whether each is cached): what ``flatbench fetch-weights`` does once the entry has read the names
from the config. timm weights land in the Hugging Face hub cache (HF_HOME / HF_HUB_CACHE), torchvision
weights in the torch hub cache (TORCH_HOME); the testbed's weights are pinned in the package and
skipped, and an LGV set, which only its user can download, is checked."""
from __future__ import annotations

from typing import Sequence

from flatbench.core.registry import ConfigError
from flatbench.models import TESTBED, load_model, parse_name, source_of, weights_cached


def fetch(names: Sequence[str], dry_run: bool = False) -> int:
    """Fetch (or list) each name's weights, one line each, then a summary; returns how many failed."""
    names = [n for n in dict.fromkeys(names) if n not in TESTBED]
    failed = 0
    for name in names:
        if source_of(name).name == "lgv":   # not on a hub: a local set, which only the user can download
            try:
                source_of(name).check_available(name)
                print(f"  {'cached ' if dry_run else 'ok     '} {name} (lgv)")
            except ConfigError as exc:
                print(f"  {'missing' if dry_run else 'FAILED '} {name}: {exc}")
                failed += 0 if dry_run else 1
            continue
        try:
            spec = parse_name(name)
            cached = spec.checkpoint.is_file() if spec.checkpoint else weights_cached(spec)
        except ConfigError as exc:
            print(f"  ERROR   {name}: {exc}")
            failed += 1
            continue
        if dry_run:
            print(f"  {'cached ' if cached else 'missing'} {name} ({spec.library})")
            continue
        try:
            load_model(name, pretrained=True)
            print(f"  ok      {name}")
        except ConfigError as exc:
            print(f"  FAILED  {name}: {exc}")
            failed += 1
    print(f"{len(names)} model(s); {failed} failed" + (" (dry run: nothing downloaded)" if dry_run else ""))
    return failed
