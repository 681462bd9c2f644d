#!/usr/bin/env bash
# The main job: `flwr run .` in local simulation with 3 sites on the embedded default models
# and data. Extra arguments go to `flwr run` (e.g. --run-config "num-server-rounds=3").
#
# Flower's state for these runs lives in .flwr/ inside the project (FLWR_HOME), and the
# background SuperLink that `flwr run` starts is stopped when the run ends.
set -euo pipefail
cd "$(dirname "$0")/.."

export FLWR_HOME="${FLWR_HOME:-$PWD/.flwr}"
# Offline machines: never let Flower pip-install the app's dependencies at run time.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
mkdir -p "$FLWR_HOME"
# Every process of the run (the simulation's workers included) allocates with mimalloc where
# it is installed: smaller and faster training than glibc's malloc (fedrag_flower/allocator.py;
# FEDRAG_ALLOCATOR=system keeps the system's).
eval "$("$PWD/.venv/bin/python" -m fedrag_flower.allocator)"

stop_local_superlink() {
  # The SuperLink `flwr run` started for this FLWR_HOME and everything under it, by PID.
  "$PWD/.venv/bin/python" -m fedrag_flower.processes stop-local-superlink "$FLWR_HOME" || true
}
trap stop_local_superlink EXIT

PATH="$PWD/.venv/bin:$PATH" flwr run . --stream --federation-config "num-supernodes=3" "$@"
