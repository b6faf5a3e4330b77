# Shared by the launch scripts: split the command line into the launcher's own
# options (--dry-run and --NAME=VALUE for NAME in $LAUNCH_OPTIONS) and the
# arguments for `python -m jaxret.main` (--config=..., --workdir=..., overrides).
# Sets DRY_RUN, MAIN_ARGS (array; --mode=train unless a mode is given) and
# OPT_<NAME> variables.

DRY_RUN=0
MAIN_ARGS=()

parse_launch_args() {
  local arg name value
  for arg in "$@"; do
    case "$arg" in
      --dry-run) DRY_RUN=1 ;;
      --*=*)
        name="${arg%%=*}"; name="${name#--}"; value="${arg#*=}"
        if [[ " ${LAUNCH_OPTIONS} " == *" ${name} "* ]]; then
          printf -v "OPT_${name//-/_}" '%s' "$value"
        else
          MAIN_ARGS+=("$arg")
        fi ;;
      *) MAIN_ARGS+=("$arg") ;;
    esac
  done
  local has_config=0 has_workdir=0
  for arg in "${MAIN_ARGS[@]}"; do
    [[ "$arg" == --config=* ]] && has_config=1
    [[ "$arg" == --workdir=* ]] && has_workdir=1
  done
  if (( ! has_config || ! has_workdir )); then
    echo "error: pass --config=configs/NAME.py and --workdir=DIR (as for python -m jaxret.main)" >&2
    exit 2
  fi
  has_main_arg --mode= || MAIN_ARGS=(--mode=train "${MAIN_ARGS[@]}")
}

# Prints a command (shell-quoted) under --dry-run, else runs it.
run_or_print() {
  if (( DRY_RUN )); then
    printf '%q ' "$@"; printf '\n'
  else
    "$@"
  fi
}

has_main_arg() {  # has_main_arg PREFIX: whether an argument starts with PREFIX.
  local arg
  for arg in "${MAIN_ARGS[@]}"; do [[ "$arg" == "$1"* ]] && return 0; done
  return 1
}
