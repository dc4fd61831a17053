#!/usr/bin/env bash
# Two CPU processes on 127.0.0.1, two simulated devices each (a 4-device mesh), training one
# config together; each prints the checksum of its parameters, and they agree.
# Usage: launch/local_two_process.sh CONFIG WORKDIR [--config.x=y ...]
#   The global batch is 4 (one clip per device) unless a --config.data.global_batch=N follows.
#   Each process's log goes beside a local WORKDIR (WORKDIR.process0.log), or into a temporary
#   folder for a gs:// one; the script prints where. PYTHON (default: the checkout's
#   .venv/bin/python) runs launch/train.py.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.x=y ...]" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
config=$1 workdir=$2
shift 2
if [[ $workdir == *://* ]]; then
  logs=$(mktemp -d "${TMPDIR:-/tmp}/two_process_logs.XXXXXX")/process
else
  mkdir -p "$(dirname "$workdir")"
  logs=$workdir.process
fi
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2
pids=()
for id in 0 1; do
  "$python" "$root/launch/train.py" --config="$config" --workdir="$workdir" --config.data.global_batch=4 \
    --coordinator_address=127.0.0.1:"$port" --num_processes=2 --process_id=$id "$@" \
    > "$logs$id.log" 2>&1 &
  pids+=($!)
done
status=0
for id in 0 1; do
  if ! wait "${pids[$id]}"; then
    status=1
    echo "process $id failed; the end of $logs$id.log:" >&2
    tail -n 5 "$logs$id.log" >&2
  fi
done
grep -h "parameter checksum" "$logs"0.log "$logs"1.log || true
echo "logs: $logs""0.log, $logs""1.log"
exit $status
