#!/usr/bin/env bash
# Runs jaxret on all GPUs of one host: one process, the batch split over the GPUs.
# Lets XLA take most of the GPU memory up front, enables the latency-hiding
# scheduler, and computes in bfloat16 unless the arguments choose a dtype.
#
#   launch/gpu_host.sh [--mem-fraction=0.9] [--dry-run] --config=configs/NAME.py \
#       --workdir=DIR [--config.KEY=VALUE ...]
set -euo pipefail
source "$(dirname "$0")/common.sh"
LAUNCH_OPTIONS="mem-fraction"
OPT_mem_fraction=0.9
parse_launch_args "$@"
export XLA_PYTHON_CLIENT_PREALLOCATE=true
export XLA_PYTHON_CLIENT_MEM_FRACTION="$OPT_mem_fraction"
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
if ! has_main_arg --config.model.dtype=; then
  MAIN_ARGS+=(--config.model.dtype=bfloat16)
fi
(( DRY_RUN )) && echo "export XLA_PYTHON_CLIENT_PREALLOCATE=true XLA_PYTHON_CLIENT_MEM_FRACTION=$OPT_mem_fraction XLA_FLAGS='$XLA_FLAGS'"
run_or_print python -m jaxret.main "${MAIN_ARGS[@]}"
