#!/usr/bin/env bash
# Run every benchmark in turn (each against its baseline, in the same run) and keep the
# output under bench/results/. Run on a quiet machine: other load moves the numbers.
# Usage: bash bench/run_all.sh [name ...]   (default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh all >/dev/null
command -v wrk >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -q wrk >/dev/null 2>&1; }
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 FEAST_USAGE=False
mkdir -p bench/results
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(inference_inproc inference_http micro_batching triton_offload
  mcu_protocol mcu_firmware feature_ingest feature_lookup drift_vs_evidently fleet_drift rollout_fleet)
for name in "${names[@]}"; do
  echo "== $name"
  { echo "# .venv/bin/python bench/$name.py  ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
    .venv/bin/python "bench/$name.py"; } 2>&1 | sed -u -e 's/\x1b\[[0-9;]*m//g' | tee "bench/results/$name.txt"
done
