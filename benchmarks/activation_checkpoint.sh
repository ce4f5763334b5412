#!/usr/bin/env bash
# Peak memory and step time of one training step with and without activation checkpointing
# (MODEL.ACTIVATION_CHECKPOINT.PARTS), GN R50-FPN and GN Cascade Mask R-CNN at 800x1333, 2 synthetic images,
# with detectron2's frozen-BN R50-FPN Mask R-CNN for reference. Each row is a fresh tools/benchmark.py process, so its
# peak memory is that process's own (CPU: max RSS = VmHWM; CUDA: torch.cuda.max_memory_allocated). LR 0: every run
# does the same work on unchanged weights. The frozen-BN model estimates its BN statistics from 3 forwards first
# (--calibrate-bn 3), then freezes them (a random network has none; docs/benchmarks.md, "GN overhead").
#
#   bash benchmarks/activation_checkpoint.sh [cpu|cuda] [fp32|bf16]     (JSON lines: $OUT/activation_checkpoint.jsonl)
# ITERS / WARMUP set the timed and untimed steps (default 3 / 1); PYTHON the interpreter (default .venv/bin/python);
# ONLY=N runs row N alone (0-based, in the order below).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-cpu}
PRECISION=${2:-fp32}
PY=${PYTHON:-.venv/bin/python}
ITERS=${ITERS:-3}
WARMUP=${WARMUP:-1}
RESULTS=${OUT:-/tmp}/activation_checkpoint.jsonl
GN=configs/GN/mask_rcnn_R_50_FPN_3x_gn.yaml
CASCADE=configs/Misc/cascade_mask_rcnn_R_50_FPN_3x_gn.yaml
FROZEN=configs/Misc/mask_rcnn_R_50_FPN_1x_frozenbn.yaml
BACKBONE="MODEL.ACTIVATION_CHECKPOINT.PARTS ['res3','res4','res5','fpn']"
ALL="MODEL.ACTIVATION_CHECKPOINT.PARTS ['res3','res4','res5','fpn','box_head','mask_head']"
ROWS=("GN R50-FPN|$GN|" "GN R50-FPN, res3-5 + FPN checkpointed|$GN|$BACKBONE" "GN R50-FPN, all checkpointed|$GN|$ALL"
      "GN Cascade|$CASCADE|" "GN Cascade, res3-5 + FPN checkpointed|$CASCADE|$BACKBONE"
      "GN Cascade, all checkpointed|$CASCADE|$ALL" "frozen-BN R50-FPN|$FROZEN|--calibrate-bn 3 MODEL.RESNETS.NORM BN")
if [[ -n "${ONLY:-}" ]]; then ROWS=("${ROWS[@]:$ONLY:1}"); fi  # ONLY=N: row N alone (0-based)
for ROW in "${ROWS[@]}"; do
  NAME=${ROW%%|*}; REST=${ROW#*|}; CFG=${REST%%|*}; OPTS=${REST#*|}
  echo "-- $NAME: $CFG $OPTS"
  FLAGS=""; if [[ "$OPTS" == --calibrate-bn* ]]; then FLAGS="--calibrate-bn 3"; OPTS=${OPTS#--calibrate-bn 3 }; fi
  # shellcheck disable=SC2086
  $PY tools/benchmark.py --config-file "$CFG" --task train --precision "$PRECISION" --size 800 --max-size 1333 --images 2 \
      --iters "$ITERS" --warmup "$WARMUP" --json "$RESULTS" $FLAGS MODEL.DEVICE "$DEVICE" SOLVER.BASE_LR 0.0 $OPTS 2>&1 \
      | grep -E "seconds per iteration|peak memory|rror" | head -4
done
