#!/usr/bin/env bash
# Runs jaxret on this machine's CPU with N simulated devices, optionally split
# over P local processes (gloo collectives), as a rehearsal for a pod.
#
#   launch/local_cpu.sh [--devices=8] [--processes=1] [--port=12355] [--dry-run] \
#       --config=configs/demo.py --workdir=/tmp/run [--config.KEY=VALUE ...]
set -euo pipefail
source "$(dirname "$0")/common.sh"
LAUNCH_OPTIONS="devices processes port"
OPT_devices=8
OPT_processes=1
OPT_port=12355
parse_launch_args "$@"
if (( OPT_devices % OPT_processes )); then
  echo "error: --devices=$OPT_devices is not divisible by --processes=$OPT_processes" >&2
  exit 2
fi
per_process=$(( OPT_devices / OPT_processes ))
export XLA_FLAGS="--xla_force_host_platform_device_count=${per_process}"
export JAX_PLATFORMS=cpu
(( DRY_RUN )) && echo "export XLA_FLAGS=$XLA_FLAGS JAX_PLATFORMS=cpu"
if (( OPT_processes == 1 )); then
  run_or_print python -m jaxret.main "${MAIN_ARGS[@]}"
  exit 0
fi
pids=()
for (( i = 0; i < OPT_processes; i++ )); do
  cmd=(python -m jaxret.main "${MAIN_ARGS[@]}" "--coordinator_address=127.0.0.1:${OPT_port}"
       "--num_processes=${OPT_processes}" "--process_id=${i}")
  if (( DRY_RUN )); then
    run_or_print "${cmd[@]}"
  else
    "${cmd[@]}" & pids+=($!)
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
