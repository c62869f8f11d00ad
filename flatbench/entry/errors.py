"""What a user sees when something goes wrong: expected errors (a bad config or data, missing
weights, non-finite values, out of memory with its advice, unwritable files) are one line on
stderr; anything else is a bug and keeps its traceback. Presentation only: the error record a
failed cell leaves and the summary of a sweep's failures are :mod:`flatbench.entry.failures`, the glue
that gives Hydra and submitit this behaviour :mod:`flatbench.entry.launching`, and the wrapper of the
Hydra task :mod:`flatbench.entry.job`."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from flatbench.core.migration import old_config_text
from flatbench.cell.signals import EXIT_STOPPED, Stop

log = logging.getLogger("flatbench")


def expected_errors() -> tuple:
    """Errors flatbench raises on purpose: one line each. Anything else is a bug."""
    from flatbench.attacks.loop import NonFiniteError
    from flatbench.core.registry import ConfigError

    return (ConfigError, NonFiniteError, OSError)


def _verbose() -> bool:
    from hydra.core.hydra_config import HydraConfig

    try:
        return bool(HydraConfig.get().verbose)
    except ValueError:
        return False


def full_error() -> bool:
    """Whether the user asked for tracebacks (hydra.verbose=true, HYDRA_FULL_ERROR=1, FLATBENCH_TRACEBACK)."""
    return _verbose() or os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(os.environ.get("FLATBENCH_TRACEBACK"))


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or type(exc).__name__}"


def stopped(exc: Stop) -> None:
    print(f"flatbench: {exc}; finished batches are kept, rerun (or requeue) to resume", file=sys.stderr)
    sys.exit(EXIT_STOPPED)


def guarded(fn, *args, composing: bool = False, **kwargs):
    """Run fn; expected errors become one line on stderr and exit 1 (SIGTERM stops exit 143).
    ``composing``: fn composes the user's overrides (``flatbench plan``), so Hydra's and OmegaConf's
    composition errors are the user's mistakes too, printed as the main command prints them."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    composition = (HydraException, OmegaConfBaseException) if composing else ()
    try:
        return fn(*args, **kwargs)
    except Stop as exc:
        stopped(exc)
    except expected_errors() as exc:
        if full_error():
            raise
        print(f"flatbench: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except composition as exc:
        if full_error():
            raise
        print(f"flatbench: error: {composition_error(exc)}", file=sys.stderr)
        sys.exit(1)


class CellFailed(Exception):
    """One cell of a multirun failed with an expected error (already printed in one line).

    Raised, not exited, so that Hydra records the job as failed and runs the other cells."""


def unknown_key(text: str, overrides: Optional[List[str]] = None) -> Optional[str]:
    """Hydra's "Could not override 'KEY'" (a key the config does not have) as flatbench's line: the key,
    the closest valid key and the valid keys of its node, read from the config the other overrides
    compose to. None for any other error."""
    import re

    from omegaconf import DictConfig, OmegaConf

    from flatbench.entry.compose import compose
    from flatbench.core.registry import suggest

    m = re.search(r"Could not override '([^']+)'", text)
    if not m or not re.search(r"not in struct|not in '\w+'", text):
        return None
    key = m.group(1)
    parent, _, leaf = key.rpartition(".")
    given = [o for o in (sys.argv[1:] if overrides is None else overrides)
             if "=" in o and not o.startswith(("-", "hydra.")) and o.split("=", 1)[0].lstrip("+~") != key]
    valid: List[str] = []
    for attempt in (given, [o for o in given if "," not in o.split("=", 1)[1]], []):   # sweeps do not compose
        try:
            cfg = compose(attempt)
        except Exception:  # noqa: BLE001 - another bad override: try with fewer
            continue
        node = OmegaConf.select(cfg, parent) if parent else cfg
        valid = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
        break
    where = f" of {parent}" if parent else ""
    listed = f" Valid keys{where}: {', '.join(sorted(valid))}." if valid else ""
    close = suggest(leaf, [v for v in valid if v != "name"])   # a group's 'name' selects the part: rarely meant
    return f"unknown key {key!r}.{close}{listed}"


def composition_error(exc: BaseException, overrides: Optional[List[str]] = None) -> str:
    """A composition error (Hydra's, OmegaConf's, flatbench's checks) as one line, with the
    closest option of a misspelt group choice or key and the renamed names when they are the cause."""
    import re

    from flatbench.entry.compose import CONFIG_DIR
    from flatbench.core.registry import suggest

    text = str(exc) + ("\n" + str(exc.__cause__) if exc.__cause__ is not None else "")
    key = unknown_key(text, overrides)
    if key is not None:
        return key
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
    lines = list(dict.fromkeys(ln for ln in lines if not ln.startswith(("Config search path", "provider="))))
    miss = re.search(r"Could not (?:find|load) '([\w/]+)/([^']+)'", text)
    if miss:
        options = [p.stem for p in (Path(CONFIG_DIR) / miss.group(1)).glob("*.yaml")]
        lines.append(suggest(miss.group(2), options).strip())
    hint = old_config_text(text)  # a user's own config written for an older version
    if hint:
        lines.append(hint)
    return "; ".join(ln for ln in lines if ln) or type(exc).__name__


def compose_or_exit(overrides: List[str]):
    """:func:`flatbench.entry.compose.compose`, with a bad override as one line on stderr and exit 1,
    as on the main command (``evaluate``, ``describe``)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from flatbench.entry.compose import compose

    try:
        return compose(overrides)
    except (HydraException, OmegaConfBaseException, *expected_errors()) as exc:
        if full_error():
            raise
        print(f"flatbench: error: {composition_error(exc, overrides)}", file=sys.stderr)
        sys.exit(1)
