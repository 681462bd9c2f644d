#!/usr/bin/env bash
# Strategies and differential privacy at one budget, with the quality comparison: the
# untrained system and the federated arm for FedAvg, FedProx, FedAdam and client-side DP at
# two noise levels, each into its own output folder, then one Markdown table of them all.
#
#   bash benchmarks/strategy_and_dp.sh                       # the measurement (about 5 x a
#                                                            # 2-round federated run)
#   SMOKE=1 bash benchmarks/strategy_and_dp.sh               # a small end-to-end try
#   LOCK="flock /tmp/fedrag-cpu.lock" bash benchmarks/...    # each run under a lock
#
# Settings (environment): OUT (output root), BUDGET (run-config keys every row shares),
# SEEDS, EXTRA (more compare flags), FEDADAM_ETA / FEDADAM_TAU, DP_CLIP, PY.
# A rerun skips every arm already finished (compare's result files), so an interrupted
# run continues. Why these values: benchmarks/README.md, "strategy_and_dp.sh".
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
LOCK=${LOCK:-}
SEEDS=${SEEDS:-0}
FEDPROX_MU=${FEDPROX_MU:-0.01}
FEDADAM_ETA=${FEDADAM_ETA:-0.005}
FEDADAM_TAU=${FEDADAM_TAU:-1e-4}
DP_CLIP=${DP_CLIP:-6.0}
if [[ -n "${SMOKE:-}" ]]; then
  OUT=${OUT:-outputs/strategy-and-dp-smoke}
  BUDGET=${BUDGET:-"num-server-rounds=1 pairs-per-round=4 local-steps=1 batch-size=4 lsr-batch-size=4 lsr-top-k=4"}
  EXTRA=${EXTRA:-"--sites 2 --pairs-per-site 4 --test-per-site 2"}
else
  OUT=${OUT:-outputs/strategy-and-dp}
  BUDGET=${BUDGET:-"num-server-rounds=2 pairs-per-round=24 lsr-epochs=4 lora-freeze-a=false adapt-chunks=false lsr-gold-candidate=false"}  # the recorded tables' recipe
  EXTRA=${EXTRA:-}
fi

compare() {  # compare NAME ARMS RUN-CONFIG
  local name=$1 arms=$2 keys=$3
  echo "== $name: --arms $arms --run-config \"$BUDGET $keys\"" >&2
  # shellcheck disable=SC2086  # LOCK, SEEDS, arms and EXTRA are word lists
  $LOCK env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m fedrag_flower.cli compare \
    --seeds $SEEDS --arms $arms $EXTRA --output "$OUT/$name" --run-config "$BUDGET $keys" \
    > "$OUT/$name.log" 2>&1 || { echo "$name failed: see $OUT/$name.log" >&2; exit 1; }
}

mkdir -p "$OUT"
compare fedavg "untrained federated" "strategy='fedavg'"
compare fedprox federated "strategy='fedprox' proximal-mu=$FEDPROX_MU"
compare fedadam federated "strategy='fedadam' fedopt-eta=$FEDADAM_ETA fedopt-tau=$FEDADAM_TAU"
compare dp-noise-0.3 federated "dp='client-fixed' dp-noise=0.3 dp-clip=$DP_CLIP"
compare dp-noise-1.0 federated "dp='client-fixed' dp-noise=1.0 dp-clip=$DP_CLIP"

"$PY" benchmarks/strategy_table.py "$OUT"/{fedavg,fedprox,fedadam,dp-noise-0.3,dp-noise-1.0}/comparison.json \
  > "$OUT/strategy_table.md"
cat "$OUT/strategy_table.md"
echo "strategy_and_dp: table written to $OUT/strategy_table.md" >&2
