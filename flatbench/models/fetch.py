"""``flatbench fetch-weights``: download every pretrained weight a flatbench config needs, so that
runs work offline.

Run it on a machine with internet, with the overrides you will run with:

    flatbench fetch-weights experiment=pgn_table1
    flatbench fetch-weights targets=transferattack surrogate=resnet50.tv_in1k
    flatbench fetch-weights --dry-run experiment=transferattack_rn50   # list, download nothing

It composes the config exactly as ``flatbench`` does, collects the surrogate(s) (including
values swept in ``hydra.sweeper.params``) and every target-zoo model, and loads each with
its pretrained weights: timm weights land in the Hugging Face hub cache (HF_HOME /
HF_HUB_CACHE), torchvision weights in the torch hub cache (TORCH_HOME). Copy those caches
to an offline machine and run with ``HF_HUB_OFFLINE=1``.
"""
from __future__ import annotations

import argparse
import sys
from typing import List


def needed_models(cfg) -> List[str]:
    """Surrogates (also swept ones) and target models, in order, without duplicates."""
    from ..config import as_container, surrogate_names
    from ..target_zoo import parse_targets
    from . import TESTBED

    names = list(surrogate_names(cfg.surrogate))
    swept = (as_container(cfg.hydra.sweeper.get("params")) or {}).get("surrogate")
    if swept:
        for part in str(swept).split(","):
            names.append(part.strip())
    names += [e["model"] for e in parse_targets(cfg.targets).values()]
    return [n for n in dict.fromkeys(names) if n not in TESTBED]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flatbench fetch-weights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="list the models and whether their weights are cached")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for flatbench")
    args = p.parse_args(argv)
    from ..compose import compose
    from ..errors import composition_error
    from ..registry import ConfigError
    from . import load_model, parse_name, source_of, weights_cached

    try:
        names = needed_models(compose(args.overrides, hydra=True))
    except Exception as exc:  # noqa: BLE001 - composition errors are the user's to fix
        print(f"flatbench fetch-weights: error: {composition_error(exc, args.overrides)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        if source_of(name).name == "lgv":   # not on a hub: a local set, which only the user can download
            try:
                source_of(name).check_available(name)
                print(f"  {'cached ' if args.dry_run else 'ok     '} {name} (lgv)")
            except ConfigError as exc:
                print(f"  {'missing' if args.dry_run else 'FAILED '} {name}: {exc}")
                failed += 0 if args.dry_run else 1
            continue
        try:
            spec = parse_name(name)
            cached = spec.checkpoint.is_file() if spec.checkpoint else weights_cached(spec)
        except ConfigError as exc:
            print(f"  ERROR   {name}: {exc}")
            failed += 1
            continue
        if args.dry_run:
            print(f"  {'cached ' if cached else 'missing'} {name} ({spec.library})")
            continue
        try:
            load_model(name, pretrained=True)
            print(f"  ok      {name}")
        except ConfigError as exc:
            print(f"  FAILED  {name}: {exc}")
            failed += 1
    print(f"{len(names)} model(s); {failed} failed" + (" (dry run: nothing downloaded)" if args.dry_run else ""))
    return 1 if failed else 0

