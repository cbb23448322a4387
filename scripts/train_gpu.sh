#!/usr/bin/env bash
# Train the CLEVR checkpoints on one GPU, all nets side by side: a 2-5 M-parameter U-Net leaves
# most of an H100 idle (it is launch-bound), so several processes share the card.
#
#   bash scripts/train_gpu.sh 32        # checkpoints/clevr-{location,color,clutter}-32 (preset gpu-32)
#   bash scripts/train_gpu.sh "32 64"   # and the 64x64 versions (preset gpu-64-small)
#
# The shipped checkpoints were made on one H100 with exactly (each config.json records it):
#   bash scripts/train_gpu.sh 32
#   DUR64=576Ki EXTRA='--rampup 64Ki --avg-last 128 --t-ref 256' bash scripts/train_gpu.sh 64
#
# Environment: N (images per dataset, default 8192), DUR32 / DUR64 (training images, default
# the preset's), SEED (dataset seed, default 1), EXTRA (more train options, e.g. '--rampup 64Ki'). Datasets are made once with the project's own
# renderer (`python -m projcomp.clevr make`) on the machine's cores; re-running resumes training
# from the newest state. Logs: logs/<name>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESOLUTIONS=${1:-32}
N=${N:-8192}; SEED=${SEED:-1}
DATA=data; RUNS=runs
mkdir -p "$DATA" "$RUNS" checkpoints logs
NJOBS=$(( 3 * $(echo $RESOLUTIONS | wc -w) ))
W=$(( $(nproc) / NJOBS )); [ "$W" -ge 1 ] || W=1

make_data() {  # preset res
  local out="$DATA/$1-$2-$N.zip"
  [ -f "$out" ] || $PY -m projcomp.clevr make "$1" --n "$N" --resolution "$2" --out "$out" --seed "$SEED" --workers "$W"
}

train() {  # name dataset-preset res
  local name=$1 preset=$2 res=$3 tp dur
  if [ "$res" = 32 ]; then tp=gpu-32; dur=${DUR32:-}; else tp=gpu-64-small; dur=${DUR64:-}; fi
  $PY -m projcomp.train --preset $tp --data "$DATA/$preset-$res-$N.zip" --outdir "$RUNS/$name" \
    ${dur:+--duration $dur} --save-fp16 true --no-progress ${EXTRA:-}
  rm -rf "checkpoints/$name.tmp" && cp -r "$RUNS/$name/checkpoint" "checkpoints/$name.tmp"
  rm -rf "checkpoints/$name" && mv "checkpoints/$name.tmp" "checkpoints/$name"
}

pids=()
for res in $RESOLUTIONS; do
  for job in "clevr-location-$res location-empty" "clevr-color-$res color" "clevr-clutter-$res clutter-location"; do
    set -- $job
    ( make_data "$2" "$res" && train "$1" "$2" "$res" ) > "logs/$1.log" 2>&1 &
    pids+=($!)
  done
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ $rc = 0 ] || { echo "a job failed; see logs/" >&2; tail -n 5 logs/*.log >&2; }
exit $rc
