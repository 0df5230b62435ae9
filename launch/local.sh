#!/usr/bin/env bash
# N genjax processes on this machine acting as N hosts (CPU, gloo collectives over loopback),
# each with D virtual devices: a real multi-host run without a cluster, for testing.
#
#   launch/local.sh N [--devices D] -- --config CONFIG --workdir DIR [more genjax train flags]
#
# Exit status: the first non-zero status of any process (0 when all succeed).
set -euo pipefail
if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: launch/local.sh N [--devices D] -- GENJAX_TRAIN_FLAGS..." >&2
  exit 2
fi
n=$1 devices=4
shift
if [[ ${1:-} == --devices ]]; then devices=$2; shift 2; fi
if [[ ${1:-} == -- ]]; then shift; fi
port=${PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
for ((id = 0; id < n; id++)); do
  JAX_PLATFORMS=cpu genjax train --cpu_devices "$devices" --coordinator "localhost:$port" \
    --num_processes "$n" --process_id "$id" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || { code=$?; [[ $status -ne 0 ]] || status=$code; }
done
exit "$status"
