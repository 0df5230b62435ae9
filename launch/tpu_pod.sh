#!/usr/bin/env bash
# Run genjax on every host of a Cloud TPU pod slice (jax.distributed discovers the slice).
# Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
#   WORKDIR should be a gs:// bucket path shared by all hosts (checkpoints and metrics).
# Check first that the config fits:  genjax compile --config CONFIG --topology v5e-256
set -euo pipefail
tpu=$1; zone=$2; config=$3; workdir=$4; shift 4
repo_url=${GENJAX_REPO:-"$(git config --get remote.origin.url)"}
cmd="set -e; if [ ! -d genjax ]; then git clone -q $repo_url genjax; fi; cd genjax;
pip install -q -e '.[tpu]';
genjax train --config $config --workdir $workdir --distributed=on $*"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$cmd"
