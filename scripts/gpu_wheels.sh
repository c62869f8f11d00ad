#!/usr/bin/env bash
# Wheels that scripts/gpu_check.sh needs on a GPU machine that has torch and timm but no Hydra and
# no network: hydra-core, omegaconf, antlr4-python3-runtime (pure Python), downloaded here into
# .whl/ (ignored by git) for the device tool to carry. Versions: those this checkout's venv runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$(command -v python3)}
[ -x .venv/bin/python ] && PY=.venv/bin/python
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
pins=$("$PY" -c "from importlib.metadata import version as v; print(' '.join(f'{n}=={v(n)}' for n in ('hydra-core', 'omegaconf', 'antlr4-python3-runtime')))")
# pip wheel: antlr4-python3-runtime 4.9.3 exists only as an sdist; built here into a pure-Python wheel.
"$PY" -m pip wheel -q --no-deps -w .whl $pins 2> >(grep -v "is ignored: it is neither" >&2)
ls -1 .whl
