#!/usr/bin/env bash
# Two CPU processes on 127.0.0.1, two simulated devices each, training one config together.
# Usage: launch/local_two_process.sh CONFIG WORKDIR [--config.x=y ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1 workdir=$2
shift 2
mkdir -p "$(dirname "$workdir")"
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2
pids=()
for id in 0 1; do
  .venv/bin/python launch/train.py --config="$config" --workdir="$workdir" \
    --coordinator_address=127.0.0.1:"$port" --num_processes=2 --process_id=$id "$@" \
    > "$workdir.process$id.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
grep -h "parameter checksum" "$workdir".process*.log
exit $status
