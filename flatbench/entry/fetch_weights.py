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
    """Surrogates (also swept ones) and target models, in order, without duplicates (the testbed's too:
    :func:`flatbench.models.fetch.fetch` skips those)."""
    from flatbench.entry.config import as_container, surrogate_names
    from flatbench.entry.target_zoo import parse_targets

    names = list(surrogate_names(cfg.surrogate))
    swept = (as_container(cfg.hydra.sweeper.get("params")) or {}).get("surrogate")
    if swept:
        for part in str(swept).split(","):
            names.append(part.strip())
    names += [e["model"] for e in parse_targets(cfg.targets).values()]
    return list(dict.fromkeys(names))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flatbench fetch-weights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="list the models and whether their weights are cached")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for flatbench")
    args = p.parse_args(argv)
    from flatbench.entry.compose import compose
    from flatbench.entry.errors import composition_error
    from flatbench.models.fetch import fetch

    try:
        names = needed_models(compose(args.overrides, hydra=True))
    except Exception as exc:  # noqa: BLE001 - composition errors are the user's to fix
        print(f"flatbench fetch-weights: error: {composition_error(exc, args.overrides)}", file=sys.stderr)
        return 2
    return 1 if fetch(names, args.dry_run) else 0
