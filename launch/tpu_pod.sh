#!/usr/bin/env bash
# Train on every host of a Cloud TPU pod slice: create the slice (or reuse it), install genjax
# at this checkout's commit on every worker, run `genjax train --distributed=on` on all of
# them at once (jax.distributed finds the slice's hosts; each reads only its rows of every
# batch; process 0 writes the metric stream).
#
#   launch/tpu_pod.sh [--create TYPE] [--version V] [--spot] TPU ZONE CONFIG WORKDIR [ARGS...]
#
#   --create TYPE   create the TPU VM when it does not exist (e.g. v5litepod-256, v5p-128)
#   --version V     its software version (default v2-alpha-tpuv5-lite; v5p: v2-alpha-tpuv5)
#   --spot          a spot (preemptible) slice; rerun this script to resume after preemption
#   WORKDIR         gs://BUCKET/PATH, shared by every host (checkpoints, metrics, analysis)
#   ARGS            more `genjax train` flags, e.g. --config.train.steps=20000
#
# Check first that the config fits:  genjax compile --config CONFIG --topology v5e-256
# Watch it live from anywhere:       genjax metrics --follow WORKDIR
# Environment: GENJAX_REPO (default: this checkout's origin), GENJAX_REF (default: HEAD).
set -euo pipefail
usage() { echo "usage:"; sed -n '7,15p' "$0" | sed 's/^# \{0,1\}//'; }
create="" version="v2-alpha-tpuv5-lite" spot=()
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --create) create=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --spot) spot=(--spot); shift ;;
    --help|-h) usage; exit 0 ;;
    *) echo "tpu_pod.sh: unknown flag $1" >&2; exit 2 ;;
  esac
done
if [[ $# -lt 4 ]]; then usage >&2; exit 2; fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
if [[ $workdir != gs://* ]]; then
  echo "tpu_pod.sh: WORKDIR must be a gs:// path that every host shares, got $workdir" >&2
  exit 2
fi
if ! gcloud compute tpus tpu-vm describe "$tpu" --zone "$zone" >/dev/null 2>&1; then
  if [[ -z $create ]]; then
    echo "tpu_pod.sh: no TPU VM $tpu in $zone; pass --create TYPE (e.g. v5litepod-256)" >&2
    exit 2
  fi
  gcloud compute tpus tpu-vm create "$tpu" --zone "$zone" --accelerator-type "$create" \
    --version "$version" "${spot[@]}"
fi
repo=${GENJAX_REPO:-$(git config --get remote.origin.url)}
ref=${GENJAX_REF:-$(git rev-parse HEAD)}
args=$(printf ' %q' "$@")
cmd="set -e; [ -d genjax ] || git clone -q $repo genjax; cd genjax; git fetch -q origin;
git checkout -q $ref; pip install -q -e '.[tpu]';
genjax train --config $(printf %q "$config") --workdir $(printf %q "$workdir") --distributed=on$args"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$cmd"
