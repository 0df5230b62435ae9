#!/usr/bin/env bash
# Two genjax processes on this machine acting as two hosts (CPU, gloo collectives), each with
# 4 virtual devices: a real multi-host run without a cluster. Usage:
#   launch/local_multihost.sh CONFIG WORKDIR [--config.x=y ...]
set -euo pipefail
config=$1; workdir=$2; shift 2
port=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
for id in 0 1; do
  JAX_PLATFORMS=cpu genjax train --config "$config" --workdir "$workdir" --cpu_devices 4 \
    --coordinator "localhost:$port" --num_processes 2 --process_id "$id" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
