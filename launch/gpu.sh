#!/usr/bin/env bash
# One host with N GPUs: one process drives them all (JAX's single-process multi-device mode) and the batch
# is split over a data mesh of N. SIGTERM makes the run save and exit with 143; the same command resumes it.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/gpu.sh --run-dir DIR [options] [-- PRETRAIN_ARGS...]

  --run-dir DIR        the run directory (resumed if it holds checkpoints)
  --gpus N             how many GPUs (default: all that nvidia-smi lists); the data mesh gets N
  --log FILE           also append the output to FILE
  --install            first install jax[cuda12] and this checkout into .venv
  --dry-run            print the commands, run nothing
  -h, --help           this text
  -- ARGS...           pretrain arguments besides --run-dir, e.g. -- --config configs/electra_base.yaml

Example:
  launch/gpu.sh --gpus 4 --run-dir runs/da-base --log runs/da-base.log -- --config configs/electra_base.yaml \
      data.prepared=prepared/da
EOF
}

DRY_RUN=0
RUN_DIR=
GPUS=
LOG=
INSTALL=0
PRETRAIN_ARGS=()
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { printf 'error: %s\n' "$*" >&2; exit 2; }

run() {  # print the exact command, then run it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if (( DRY_RUN == 0 )); then "$@"; fi
}

while (( $# )); do
  case $1 in
    --run-dir) RUN_DIR=${2:?--run-dir needs a value}; shift ;;
    --gpus) GPUS=${2:?--gpus needs a value}; shift ;;
    --log) LOG=${2:?--log needs a value}; shift ;;
    --install) INSTALL=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; PRETRAIN_ARGS=("$@"); break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ -n $RUN_DIR ]] || die "give --run-dir"
if [[ -z $GPUS ]]; then
  if (( DRY_RUN )); then GPUS=1; else GPUS=$(nvidia-smi --list-gpus | wc -l); fi
fi
[[ $GPUS =~ ^[1-9][0-9]*$ ]] || die "--gpus takes a positive whole number, not $GPUS"

if (( INSTALL )); then
  run python3 -m venv "$REPO/.venv"
  run "$REPO/.venv/bin/pip" install --quiet --upgrade pip
  run "$REPO/.venv/bin/pip" install --quiet "jax[cuda12]" -e "$REPO"
fi

visible=$(seq -s, 0 $((GPUS - 1)))
# JAX takes 75% of each GPU's memory by default; `electra-jax plan` counts on 85% of it being usable.
command=(env CUDA_VISIBLE_DEVICES="$visible" XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
         "$REPO/.venv/bin/electra-jax" pretrain --run-dir "$RUN_DIR"
         "${PRETRAIN_ARGS[@]}" mesh.data="$GPUS")
if [[ -n $LOG ]]; then
  run "${command[@]}" 2>&1 | tee -a "$LOG"
else
  run "${command[@]}"
fi
