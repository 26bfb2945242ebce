#!/usr/bin/env bash
# Make (or reuse) the Python environment and install the project's requirements. Sourced by demo.sh and test.sh.
#   VARDIU_PYTHON=/path/to/python  use that interpreter's environment (e.g. an activated conda env) instead of .venv
#   TORCH_SPEC='torch==2.13.0'     what to install when torch is missing (pick a CUDA/CPU build here if you like)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -n "${VARDIU_PYTHON:-}" ]; then
  PY="$VARDIU_PYTHON"
else
  if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $(command -v "${PYTHON:-python3}")" >&2
    "${PYTHON:-python3}" -m venv .venv
  fi
  PY="$ROOT/.venv/bin/python"
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "setup: Python 3.10+ is needed")'
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "setup: installing ${TORCH_SPEC:-torch==2.13.0}" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
fi
"$PY" -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
# the repository itself, editable, so that its packages import from anywhere (benchmarks/, experiments/, tests)
"$PY" -m pip show --quiet vardiu >/dev/null 2>&1 || "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -e .
export PY
