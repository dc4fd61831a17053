#!/usr/bin/env bash
# Runs launch/train.py on every host of a Cloud TPU VM pod slice (one process per host); JAX finds
# the other hosts through each VM's metadata server (docs/multihost.md).
# Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG gs://WORKDIR --config.data.data_dir=gs://DATA [--config.field=value ...]
# Every worker needs the repository at ~/jointist-jax, `make install` done and libtpu (launch/README.md).
# Arguments reach train.py on every worker exactly as given here (spaces and quotes included).
set -euo pipefail
usage="usage: $0 TPU_NAME ZONE CONFIG gs://WORKDIR --config.data.data_dir=gs://DATA [--config.field=value ...]"
if [ $# -lt 4 ]; then
  echo "$usage" >&2
  exit 2
fi
name=$1 zone=$2 config=$3 workdir=$4
shift 4

# Every host reads and writes the same paths: a local folder would differ from host to host.
data_dir=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --config.data.data_dir=*) data_dir=${args[i]#--config.data.data_dir=} ;;
    --config.data.data_dir) data_dir=${args[i + 1]:-} ;;
  esac
done
if [[ $workdir != gs://* ]]; then
  echo "$0: WORKDIR must be a gs:// path that every host of the slice shares, got '$workdir'" >&2
  exit 2
fi
if [[ $data_dir != gs://* ]]; then
  echo "$0: pass --config.data.data_dir=gs://... (the TFRecords every host reads), got '${data_dir:-the config default}'" >&2
  exit 2
fi

# The remote shell parses this command once: every argument is quoted for it.
command="cd ~/jointist-jax && .venv/bin/python launch/train.py$(printf ' %q' "--config=$config" "--workdir=$workdir" "$@")"
exec gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$command"
