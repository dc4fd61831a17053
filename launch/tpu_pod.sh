#!/usr/bin/env bash
# Runs launch/train.py on every host of a Cloud TPU VM pod slice (one process per host).
# Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]
# The repository must be checked out at ~/jointist-jax on every worker with `make install` done.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
name=$1 zone=$2 config=$3 workdir=$4
shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command \
  "cd ~/jointist-jax && .venv/bin/python launch/train.py --config=$config --workdir=$workdir$extra"
