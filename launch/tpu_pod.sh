#!/usr/bin/env bash
# Runs jaxret on every worker of a Cloud TPU pod slice: copies this checkout to
# all workers, installs the requirements, and starts the same command on all of
# them (jax.distributed finds its peers from the TPU environment).
#
#   launch/tpu_pod.sh --tpu=NAME --zone=ZONE [--project=P] [--remote_dir=jaxret] [--dry-run] \
#       --config=configs/NAME.py --workdir=/mnt/shared/run [--config.KEY=VALUE ...]
#
# The workdir must be a directory that all workers share (an NFS or Filestore
# mount, or a bucket mounted with gcsfuse at the same path on every worker).
set -euo pipefail
source "$(dirname "$0")/common.sh"
LAUNCH_OPTIONS="tpu zone project remote_dir"
OPT_tpu=""
OPT_zone=""
OPT_project=""
OPT_remote_dir="jaxret"
parse_launch_args "$@"
if [[ -z "$OPT_tpu" || -z "$OPT_zone" ]]; then
  echo "error: pass --tpu=NAME and --zone=ZONE of the TPU VM" >&2
  exit 2
fi
gcloud_args=(--zone="$OPT_zone" --worker=all)
[[ -n "$OPT_project" ]] && gcloud_args+=(--project="$OPT_project")
repo="$(cd "$(dirname "$0")/.." && pwd)"
run_or_print gcloud compute tpus tpu-vm scp --recurse "$repo/jaxret" "$repo/configs" \
  "$repo/requirements.txt" "$OPT_tpu:$OPT_remote_dir/" "${gcloud_args[@]}"
remote="cd $OPT_remote_dir && python3 -m pip install -q -r requirements.txt 'jax[tpu]' && python3 -m jaxret.main"
for arg in "${MAIN_ARGS[@]}"; do remote+=" $(printf '%q' "$arg")"; done
run_or_print gcloud compute tpus tpu-vm ssh "$OPT_tpu" "${gcloud_args[@]}" --command="$remote"
