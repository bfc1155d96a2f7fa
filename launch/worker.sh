#!/usr/bin/env bash
# Runs on each TPU VM worker (launch/tpu.sh calls it over ssh): installs the package, starts a run in the
# background with a log and an exit-code file, and reports the run's state.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/worker.sh [--dry-run] COMMAND ...

  install [--gcsfuse]              venv in ~/electra-jax/.venv with jax[tpu] and this checkout (and the
                                   Cloud Storage FUSE driver, for gs:// run directories)
  start [--command pretrain|distill] RUN_ID RUN_DIR [ARGS...]
                                   electra-jax pretrain (or distill) --multihost --run-dir RUN_DIR ARGS..., detached;
                                   log ~/electra-jax-runs/RUN_ID.log, exit code ~/electra-jax-runs/RUN_ID.exit.
                                   RUN_DIR gs://BUCKET/PATH is mounted with gcsfuse at ~/gcs/BUCKET, as
                                   is a KEY=gs://... override (data.prepared=gs://BUCKET/prepared).
  state RUN_ID                     prints one of: running, finished, preempted, failed EXIT_CODE, none

--dry-run prints the commands and runs nothing; -h/--help prints this.
EOF
}

DRY_RUN=0
ROOT="${ELECTRA_JAX_HOME:-$HOME/electra-jax}"
RUNS="${ELECTRA_JAX_RUNS:-$HOME/electra-jax-runs}"
PREEMPTED_EXIT=143  # electra-jax pretrain: saved on SIGTERM, not finished

run() {  # print the exact command (to stderr: stdout carries answers), then run it unless --dry-run
  { printf '+'; printf ' %q' "$@"; printf '\n'; } >&2
  if (( DRY_RUN == 0 )); then "$@"; fi
}

die() { printf 'error: %s\n' "$*" >&2; exit 2; }

local_run_dir() {  # gs://bucket/path -> the mounted local path; a relative path -> under the home folder
  local dir=$1
  if [[ $dir != gs://* ]]; then
    if [[ $dir == /* ]]; then printf '%s\n' "$dir"; else printf '%s/%s\n' "$HOME" "$dir"; fi
    return
  fi
  local rest=${dir#gs://} bucket
  bucket=${rest%%/*}
  [[ -n $bucket ]] || die "no bucket in $dir"
  local mount="$HOME/gcs/$bucket"
  if ! mountpoint -q "$mount" 2>/dev/null; then
    run mkdir -p "$mount"
    run gcsfuse --implicit-dirs "$bucket" "$mount" >&2
  fi
  if [[ $rest == */* ]]; then printf '%s/%s\n' "$mount" "${rest#*/}"; else printf '%s\n' "$mount"; fi
}

install() {
  local gcsfuse=0
  while (( $# )); do
    case $1 in
      --gcsfuse) gcsfuse=1 ;;
      *) die "install: unknown option $1" ;;
    esac
    shift
  done
  run python3 -m venv "$ROOT/.venv"
  run "$ROOT/.venv/bin/pip" install --quiet --upgrade pip
  run "$ROOT/.venv/bin/pip" install --quiet "jax[tpu]" -e "$ROOT"
  if (( gcsfuse )); then
    local release
    release=$(lsb_release -c -s)
    run sudo bash -c "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg > /usr/share/keyrings/cloud.google.asc"
    run sudo bash -c "echo 'deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$release main' > /etc/apt/sources.list.d/gcsfuse.list"
    run sudo apt-get update -qq
    run sudo apt-get install -y -qq gcsfuse
  fi
}

start() {
  local electra_command=pretrain
  if [[ ${1:-} == --command ]]; then
    electra_command=${2:?--command needs pretrain or distill}
    shift 2
  fi
  [[ $electra_command == pretrain || $electra_command == distill ]] || die "start: --command pretrain or distill, not $electra_command"
  (( $# >= 2 )) || die "start: give RUN_ID and RUN_DIR"
  local id=$1 dir=$2
  shift 2
  [[ $id =~ ^[A-Za-z0-9._-]+$ ]] || die "start: RUN_ID may hold letters, digits, '.', '_' and '-' only: $id"
  if [[ $(state "$id") == running ]]; then
    die "start: run $id is already running"
  fi
  dir=$(local_run_dir "$dir")
  local args=() arg
  for arg in "$@"; do  # a path (--teacher gs://...) or override (data.prepared=gs://...) in a bucket: the mounted copy
    if [[ $arg =~ ^([A-Za-z_.]+)=(gs://.*)$ ]]; then
      arg="${BASH_REMATCH[1]}=$(local_run_dir "${BASH_REMATCH[2]}")"
    elif [[ $arg == gs://* ]]; then
      arg=$(local_run_dir "$arg")
    fi
    args+=("$arg")
  done
  set -- "${args[@]}"
  run mkdir -p "$RUNS"
  run rm -f "$RUNS/$id.exit"
  local command
  command=$(printf '%q ' "$ROOT/.venv/bin/electra-jax" "$electra_command" --multihost --no-progress --run-dir "$dir" "$@")
  # The exit code lands beside the log when the run ends; the pid file tells a live run from a dead one.
  local script
  script="cd $(printf '%q' "$ROOT") && $command; echo \$? > $(printf '%q' "$RUNS/$id.exit")"
  if (( DRY_RUN )); then
    printf '+ nohup bash -c %q >> %q 2>&1 &\n' "$script" "$RUNS/$id.log" >&2
    return
  fi
  nohup bash -c "$script" >> "$RUNS/$id.log" 2>&1 < /dev/null &
  echo $! > "$RUNS/$id.pid"
  printf 'started %s (pid %s), log %s\n' "$id" "$!" "$RUNS/$id.log"
}

state() {
  (( $# == 1 )) || die "state: give RUN_ID"
  local id=$1
  if [[ -f $RUNS/$id.pid ]] && kill -0 "$(cat "$RUNS/$id.pid")" 2>/dev/null && [[ ! -f $RUNS/$id.exit ]]; then
    echo running
  elif [[ -f $RUNS/$id.exit ]]; then
    local code
    code=$(cat "$RUNS/$id.exit")
    case $code in
      0) echo finished ;;
      "$PREEMPTED_EXIT") echo preempted ;;
      *) echo "failed $code" ;;
    esac
  else
    echo none
  fi
}

main() {
  while (( $# )); do
    case $1 in
      --dry-run) DRY_RUN=1 ;;
      -h|--help) usage; exit 0 ;;
      *) break ;;
    esac
    shift
  done
  (( $# )) || { usage >&2; exit 2; }
  local command=$1
  shift
  case $command in
    install|start|state) "$command" "$@" ;;
    *) die "unknown command $command (install, start, state)" ;;
  esac
}

main "$@"
