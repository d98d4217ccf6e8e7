#!/usr/bin/env bash
# Creates .venv (first use) and installs scan-keras with the CPU builds of
# TensorFlow, JAX and PyTorch and the development tools. Safe to re-run:
# it reinstalls only when pyproject.toml has changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SCAN_KERAS_VENV:-.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.scan-keras-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    # A plain `torch` requirement pulls several GB of CUDA packages; the
    # pinned version resolves to the CPU build where one is provided.
    "$venv/bin/python" -c "import torch" 2>/dev/null \
        || "$venv/bin/python" -m pip install -q "torch==2.13.0"
    "$venv/bin/python" -m pip install -q -e ".[tensorflow,jax,torch,nltk,search,dev,docs]"
    touch "$stamp"
fi
