#!/usr/bin/env bash
# TPU VM life cycle for electra-jax pretraining: create, setup, run, babysit, status, logs, delete.
# Every gcloud command is printed before it runs; --dry-run prints them and runs nothing.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu.sh COMMAND [options] [-- PRETRAIN_ARGS...]

Commands:
  create    create the TPU VM: on demand, --spot, or --queued (a queued resource that waits for capacity)
  setup     copy this checkout (git archive of HEAD) to every worker and install it there
  run       start `electra-jax pretrain --multihost` (or --command distill) on all workers in the background,
            a log per worker
  babysit   keep a run going until it finishes: a preempted or vanished VM is deleted, recreated, set up
            and the run restarted (it resumes from its last checkpoint); a stopped run is restarted
  status    the VM's state and the run's state on every worker
  logs      the last lines of every worker's log
  delete    delete the VM (and its queued resource)

Options (all commands):
  --name NAME          TPU VM name (env TPU_NAME)
  --zone ZONE          e.g. europe-west4-a (env TPU_ZONE)
  --project PROJECT    GCP project (env TPU_PROJECT; default: gcloud's)
  --dry-run            print the gcloud commands, run nothing
  -h, --help           this text
create (and babysit):
  --type TYPE          accelerator type, e.g. v2-8, v3-8, v4-8 (default v3-8)
  --version VERSION    TPU software version (default tpu-ubuntu2204-base)
  --spot               spot capacity: cheaper, preemptible at any time
  --queued             create through a queued resource
setup (and babysit):
  --gcsfuse            also install Cloud Storage FUSE (for a gs:// run directory)
run, status, logs (and babysit):
  --run-id ID          names the run's log and exit files on the workers (required)
  --command CMD        run and babysit: pretrain (default) or distill
  --run-dir DIR        the run directory: a path on the workers (relative: to the home folder), or
                       gs://BUCKET/PATH, which outlives the VM
  --lines N            logs: how many lines per worker (default 40)
  -- ARGS...           the command's arguments besides --run-dir, e.g. -- --config configs/electra_small.yaml
babysit:
  --poll SECONDS       between checks (default 300)
  --max-restarts N     give up after N recoveries (default 20)

Example (a spot v3-8, run directory in a bucket so it outlives preemptions):
  launch/tpu.sh create --name electra --zone europe-west4-a --type v3-8 --spot
  launch/tpu.sh setup --name electra --zone europe-west4-a --gcsfuse
  launch/tpu.sh babysit --name electra --zone europe-west4-a --type v3-8 --spot --gcsfuse \
      --run-id da-small --run-dir gs://my-bucket/runs/da-small -- --config configs/electra_small.yaml \
      data.prepared=gs://my-bucket/prepared/da
EOF
}

DRY_RUN=0
NAME=${TPU_NAME:-}
ZONE=${TPU_ZONE:-}
PROJECT=${TPU_PROJECT:-}
TYPE=v3-8
VERSION=tpu-ubuntu2204-base
SPOT=0
QUEUED=0
GCSFUSE=0
RUN_ID=
RUN_DIR=
COMMAND=pretrain
LINES=40
POLL=300
MAX_RESTARTS=20
PRETRAIN_ARGS=()
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

die() { printf 'error: %s\n' "$*" >&2; exit 2; }
note() { printf '%s\n' "$*" >&2; }

run() {  # print the exact command, then run it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if (( DRY_RUN == 0 )); then "$@"; fi
}

parse() {
  while (( $# )); do
    case $1 in
      --name) NAME=${2:?--name needs a value}; shift ;;
      --zone) ZONE=${2:?--zone needs a value}; shift ;;
      --project) PROJECT=${2:?--project needs a value}; shift ;;
      --type) TYPE=${2:?--type needs a value}; shift ;;
      --version) VERSION=${2:?--version needs a value}; shift ;;
      --spot) SPOT=1 ;;
      --queued) QUEUED=1 ;;
      --gcsfuse) GCSFUSE=1 ;;
      --command) COMMAND=${2:?--command needs a value}; shift ;;
      --run-id) RUN_ID=${2:?--run-id needs a value}; shift ;;
      --run-dir) RUN_DIR=${2:?--run-dir needs a value}; shift ;;
      --lines) LINES=${2:?--lines needs a value}; shift ;;
      --poll) POLL=${2:?--poll needs a value}; shift ;;
      --max-restarts) MAX_RESTARTS=${2:?--max-restarts needs a value}; shift ;;
      --dry-run) DRY_RUN=1 ;;
      -h|--help) usage; exit 0 ;;
      --) shift; PRETRAIN_ARGS=("$@"); return ;;
      *) die "unknown option $1 (see --help)" ;;
    esac
    shift
  done
  local number
  [[ $COMMAND == pretrain || $COMMAND == distill ]] || die "--command: pretrain or distill, not $COMMAND"
  for number in "$LINES" "$POLL" "$MAX_RESTARTS"; do
    [[ $number =~ ^[0-9]+$ ]] || die "--lines, --poll and --max-restarts take whole numbers, not $number"
  done
}

need_vm() {
  [[ -n $NAME ]] || die "give --name (or set TPU_NAME)"
  [[ -n $ZONE ]] || die "give --zone (or set TPU_ZONE)"
  [[ $NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name: lowercase letters, digits and '-' only: $NAME"
  LOCATION=(--zone="$ZONE")
  if [[ -n $PROJECT ]]; then LOCATION+=(--project="$PROJECT"); fi
}

need_run() {
  [[ -n $RUN_ID ]] || die "give --run-id"
  [[ $RUN_ID =~ ^[A-Za-z0-9._-]+$ ]] || die "--run-id: letters, digits, '.', '_' and '-' only: $RUN_ID"
}

on_workers() {  # on_workers WORKERS COMMAND...: the words are quoted once more for the remote shell
  local workers=$1
  shift
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker="$workers" \
    --command="$(printf '%q ' "$@")"
}

worker_script() {  # worker.sh on the VM (relative to the home folder), run through bash
  printf '%s\n' "electra-jax/launch/worker.sh"
}

cmd_create() {
  need_vm
  [[ $TYPE =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] || die "--type: an accelerator type such as v2-8, v3-8 or v4-8: $TYPE"
  local capacity=()
  if (( SPOT )); then capacity=(--spot); fi
  if (( QUEUED )); then
    run gcloud compute tpus queued-resources create "$NAME" "${LOCATION[@]}" --node-id="$NAME" \
      --accelerator-type="$TYPE" --runtime-version="$VERSION" "${capacity[@]}"
    note "queued: the VM appears once capacity is granted (launch/tpu.sh status --name $NAME --zone $ZONE)"
  else
    run gcloud compute tpus tpu-vm create "$NAME" "${LOCATION[@]}" --accelerator-type="$TYPE" \
      --version="$VERSION" "${capacity[@]}"
  fi
}

cmd_setup() {
  need_vm
  local archive=${TMPDIR:-/tmp}/electra-jax-$$.tar.gz
  run git -C "$REPO" archive --format=tar.gz --prefix=electra-jax/ -o "$archive" HEAD
  run gcloud compute tpus tpu-vm scp "$archive" "$NAME":electra-jax.tar.gz "${LOCATION[@]}" --worker=all
  local install=(install)
  if (( GCSFUSE )); then install+=(--gcsfuse); fi
  # Unpacked over the previous copy: nothing else in the home folder (run directories included) is touched.
  on_workers all bash -c "tar -xzf electra-jax.tar.gz && bash $(worker_script) ${install[*]}"
  if (( DRY_RUN == 0 )); then rm -f "$archive"; fi
}

cmd_run() {
  need_vm
  need_run
  [[ -n $RUN_DIR ]] || die "give --run-dir (a path on the workers or gs://BUCKET/PATH)"
  on_workers all bash "$(worker_script)" start --command "$COMMAND" "$RUN_ID" "$RUN_DIR" "${PRETRAIN_ARGS[@]}"
}

vm_state() {  # READY, CREATING, PREEMPTED, ... or MISSING
  local state
  if state=$(gcloud compute tpus tpu-vm describe "$NAME" "${LOCATION[@]}" --format='value(state)' 2>/dev/null); then
    printf '%s\n' "${state:-UNKNOWN}"
  else
    echo MISSING
  fi
}

run_state() {  # worker 0's view of the run: running, finished, preempted, failed N, none
  gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=0 \
    --command="$(printf '%q ' bash "$(worker_script)" state "$RUN_ID")" 2>/dev/null | tail -n 1
}

cmd_status() {
  need_vm
  run gcloud compute tpus tpu-vm describe "$NAME" "${LOCATION[@]}" --format='value(state,acceleratorType,health)'
  if [[ -n $RUN_ID ]]; then
    need_run
    on_workers all bash "$(worker_script)" state "$RUN_ID"
  fi
}

cmd_logs() {
  need_vm
  need_run
  on_workers all bash -c "echo \"== \$(hostname)\"; tail -n $LINES electra-jax-runs/$RUN_ID.log"
}

cmd_delete() {
  need_vm
  if (( QUEUED )); then
    run gcloud compute tpus queued-resources delete "$NAME" "${LOCATION[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}" --quiet
  fi
}

recover() {  # a lost VM: delete what is left, create, set up, start the run again
  local state=$1
  if [[ $state != MISSING ]]; then cmd_delete; fi
  cmd_create
  if (( QUEUED )); then wait_until_ready; fi
  cmd_setup
  cmd_run
}

wait_until_ready() {
  local state
  while state=$(vm_state); [[ $state != READY ]]; do
    note "waiting for $NAME to be READY (now $state)"
    sleep "$POLL"
  done
}

cmd_babysit() {
  need_vm
  need_run
  [[ -n $RUN_DIR ]] || die "give --run-dir (gs://BUCKET/PATH keeps the checkpoints when a VM is lost)"
  [[ $RUN_DIR == gs://* ]] || note "warning: --run-dir $RUN_DIR is on the VM's disk; a recreated VM starts over"
  if (( DRY_RUN )); then  # the commands of one recovery, as the loop would issue them
    recover PREEMPTED
    return
  fi
  local restarts=0 state progress
  while :; do
    state=$(vm_state)
    case $state in
      READY)
        progress=$(run_state || true)
        case $progress in
          finished) note "run $RUN_ID finished"; return 0 ;;
          running) ;;
          failed*) die "run $RUN_ID $progress (see: launch/tpu.sh logs --name $NAME --zone $ZONE --run-id $RUN_ID)" ;;
          *) note "run $RUN_ID is ${progress:-unreachable}: starting it again"
             restarts=$((restarts + 1))
             cmd_run ;;
        esac ;;
      PREEMPTED|TERMINATED|STOPPED|SUSPENDED|MISSING)
        restarts=$((restarts + 1))
        note "VM $NAME is $state: recovery $restarts of at most $MAX_RESTARTS"
        (( restarts <= MAX_RESTARTS )) || die "gave up after $MAX_RESTARTS recoveries"
        recover "$state" ;;
      *) note "VM $NAME is $state" ;;
    esac
    (( restarts <= MAX_RESTARTS )) || die "gave up after $MAX_RESTARTS restarts"
    sleep "$POLL"
  done
}

main() {
  (( $# )) || { usage >&2; exit 2; }
  local command=$1
  shift
  case $command in
    -h|--help) usage ;;
    create|setup|run|babysit|status|logs|delete) parse "$@"; "cmd_$command" ;;
    *) die "unknown command $command (see --help)" ;;
  esac
}

main "$@"
