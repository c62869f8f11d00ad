"""What exists, by name: methods, models, zoos, experiments and data sets.

    flatbench list methods [PATTERN]       # each method with its one-line description and defaults
    flatbench list models [PATTERN]        # testbed models (pinned accuracy) and every hub model a zoo names,
                                           # with whether its weights are in the local cache
    flatbench list zoos [PATTERN]          # each target zoo with its entries and their roles
    flatbench list experiments [PATTERN]   # each experiment with its description
    flatbench list data [PATTERN]          # each data set with its description

The same lists in Python: ``flatbench.list_methods()``, ``list_models()``, ``list_zoos()``,
``list_experiments()``, ``list_data()`` (each takes an optional glob pattern). Everything is
read from the registries and the packaged configs, so the lists cannot drift from the code.
"""
from __future__ import annotations

import fnmatch
import re
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence

KINDS = ("methods", "models", "zoos", "experiments", "data")


def _conf() -> Path:
    from flatbench.entry.compose import CONFIG_DIR

    return Path(CONFIG_DIR)


def _match(name: str, pattern: Optional[str]) -> bool:
    return pattern is None or fnmatch.fnmatch(name, pattern if any(c in pattern for c in "*?[") else f"*{pattern}*")


def _first_comment(path: Path) -> str:
    """The first sentence of a config's leading comment (it may run over several lines)."""
    words = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("# @package"):
            continue
        if not line.startswith("#") or not line.lstrip("# ").strip():
            if words:
                break
            continue
        words.append(line.lstrip("# ").strip())
    text = " ".join(words)
    # A sentence ends at . ! ? before a space or the end; not after "et al", "e.g", nor inside "2307.04099".
    for end in re.finditer(r"[.!?](?=\s|$)", text):
        if not re.search(r"\b(al|e\.g|i\.e|vs|cf|etc)$", text[:end.start()]):
            return text[:end.end()]
    return text


def _yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def list_methods(pattern: Optional[str] = None) -> List[Dict]:
    """Every ``method=`` / ``create_attack`` name: its label, description and effective defaults."""
    import torch

    from flatbench.attacks import ESTIMATORS, METHODS, OPTIMIZERS, TRANSFORMS, create_attack
    from flatbench.attacks.factory import METHOD_PRESETS
    from flatbench.attacks.scaling import rule_text

    out = []
    for name, (opt, est, tfs) in sorted(METHODS.items()):
        if not _match(name, pattern):
            continue
        # An ensemble method (CWA) is listed for two models: its cost grows with the ensemble.
        ensemble = "members" in ESTIMATORS.get(est).names()
        attack = create_attack(name, torch.nn.Identity(), eps=16 / 255, **({"members": 2} if ensemble else {}))
        parts = [OPTIMIZERS.doc(opt)] + ([ESTIMATORS.doc(est)] if est != "plain" else []) + [TRANSFORMS.doc(t) for t in tfs]
        preset = METHOD_PRESETS.get(name, {})
        # The loop's T and α when the preset fixes them (RAP, MEF), then each part's defaults as the preset sets them.
        defaults = {**({"steps": preset["steps"]} if "steps" in preset else {}),
                    **({"alpha": _length_text(preset["alpha"], attack.alpha)} if "alpha" in preset else {}),
                    **attack.optimizer.params(), **ESTIMATORS.get(est).defaults(),
                    **{k: (_length_text(preset["estimator"][k], v) if rule_text(preset["estimator"][k]) else v)
                       for k, v in attack.estimator.params().items() if k in (preset.get("estimator") or {})}}
        for t in tfs:
            defaults.update({f"{t}.{k}": v for k, v in TRANSFORMS.get(t).defaults().items()})
        # A null default stands for something the loop binds (PGN's r = alpha): say what.
        nulls = {p.name: p.null for d in (OPTIMIZERS.get(opt), ESTIMATORS.get(est)) for p in d.params if p.null}
        defaults.update({k: v for k, v in nulls.items() if defaults.get(k) is None})
        knob = ESTIMATORS.get(est).cost
        out.append({"name": name, "label": attack.label, "optimizer": opt, "estimator": est, "transforms": list(tfs),
                    "description": " | ".join(p for p in parts if p), "defaults": defaults,
                    # what the preset costs, and what budget=B changes (flatbench/attacks/budget.py)
                    "cost": f"{attack.predicted_grad_evals(1)} gradient evaluations per image"
                            f"{' with an ensemble of 2 models (each model adds one a step)' if ensemble else ''}; budget=B sets "
                            f"{knob.text if knob else 'nothing (no knob declared)'}"})
    return out


def _length_text(written, value: float) -> str:
    """A preset's length as the listing shows it: the rule of ε and its value at ε = 16/255
    ("ε/8 = 2/255 at ε = 16/255"), or the number in 1/255 units."""
    from flatbench.attacks.scaling import rule_text

    rule = rule_text(written)
    return f"{rule} = {value * 255:g}/255 at ε = 16/255" if rule else f"{value * 255:g}/255"


def list_models(pattern: Optional[str] = None) -> List[Dict]:
    """Testbed models (pinned weights, test accuracy) and the hub models the packaged zoos and
    experiments name, with whether their pretrained weights are in the local cache."""
    from flatbench.models import SOURCES, source_of

    known = SOURCES.known()
    out = [{"name": name, **source_of(name).listing(name), "used_by": []} for name in known if _match(name, pattern)]
    used: Dict[str, List[str]] = {}
    for group in ("targets", "experiment"):
        for f in sorted((_conf() / group).glob("*.yaml")):
            node = _yaml(f)
            names = [e if isinstance(e, str) else (e or {}).get("model", k) for k, e in node.items()] \
                if group == "targets" else [node.get("surrogate")] if isinstance(node.get("surrogate"), str) else []
            for n in names:
                where = used.setdefault(n, []) if n and n not in known else None
                if where is not None and f"{group}={f.stem}" not in where:
                    where.append(f"{group}={f.stem}")
    for name, where in sorted(used.items()):
        if not _match(name, pattern):
            continue
        out.append({"name": name, **source_of(name).listing(name), "used_by": where})
    return out


def list_zoos(pattern: Optional[str] = None) -> List[Dict]:
    """Every ``targets=`` zoo: its entries (key, model, role, defense)."""
    from flatbench.entry.target_zoo import parse_targets

    out = []
    for f in sorted((_conf() / "targets").glob("*.yaml")):
        if _match(f.stem, pattern):
            zoo = parse_targets(_yaml(f))
            out.append({"name": f.stem, "description": _first_comment(f),
                        "entries": [{"key": k, "model": e["model"], "role": e["role"],
                                     "defense": (e.get("defense") or {}).get("name")} for k, e in zoo.items()]})
    return out


def _described(group: str, pattern: Optional[str]) -> List[Dict]:
    return [{"name": f.stem, "description": _first_comment(f)} for f in sorted((_conf() / group).glob("*.yaml"))
            if _match(f.stem, pattern)]


def list_experiments(pattern: Optional[str] = None) -> List[Dict]:
    """Every ``experiment=`` with the first line of its description."""
    return _described("experiment", pattern)


def list_data(pattern: Optional[str] = None) -> List[Dict]:
    """Every ``data=`` set with the first line of its description."""
    return _described("data", pattern)


def _print(kind: str, rows: List[Dict]) -> None:
    if not rows:
        print(f"no {kind} match")
        return
    if kind == "methods":
        for r in rows:
            d = ", ".join(f"{k}={v}" for k, v in r["defaults"].items())
            print(f"{r['name']:16s} {r['label']:20s} {r['description']}\n{'':37s}defaults: {d or '-'}\n"
                  f"{'':37s}cost: {r['cost']}")
    elif kind == "models":
        for r in rows:
            acc = f"test acc {r['test_acc']:.2f}% (pinned)" if r["test_acc"] is not None else \
                ("weights cached" if r["cached"] else f"weights NOT cached ({r.get('hint') or 'flatbench fetch-weights'})")
            print(f"{r['name']:45s} {r['source']:11s} {acc}" + (f"  [{', '.join(r['used_by'])}]" if r["used_by"] else ""))
    elif kind == "zoos":
        for r in rows:
            print(textwrap.fill(f"{r['name']}: {r['description']}", 100, subsequent_indent="    "))
            for e in r["entries"]:
                print(f"    {e['key']:18s} {e['model']:45s} {e['role']}" + (f" ({e['defense']})" if e["defense"] else ""))
    else:
        width = max(len(r["name"]) for r in rows) + 1
        for r in rows:
            print(textwrap.fill(f"{r['name']:{width}s} {r['description']}", 100, subsequent_indent=" " * (width + 1)))


def main(argv: Sequence[str]) -> int:
    from flatbench.core.registry import suggest

    if argv and argv[0] not in KINDS and argv[0] not in ("-h", "--help"):
        print(f"flatbench list: no kind {argv[0]!r}.{suggest(argv[0], KINDS)} Kinds: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help") or len(argv) > 2:
        from flatbench.core.registry import plain

        print(plain(__doc__))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    kind, pattern = argv[0], (argv[1] if len(argv) > 1 else None)
    fn = {"methods": list_methods, "models": list_models, "zoos": list_zoos, "experiments": list_experiments,
          "data": list_data}[kind]
    try:
        _print(kind, fn(pattern))
        sys.stdout.flush()
    except BrokenPipeError:   # `flatbench list models | head`: the reader stopped; that is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
