#!/usr/bin/env bash
# One-call GPU check (< 10 minutes on one H100/H200): CUDA tests, host syncs per step, then detgn vs torchvision's
# same-architecture GN Mask R-CNN at 800x1333, 2 images: training step fp32 / bf16 AMP / fp16 AMP
# and inference, printed as a table; detgn variants; peak memory with and without activation checkpointing
# (benchmarks/activation_checkpoint.sh, JSON in $OUT/activation_checkpoint.jsonl). Also runs on CPU:
# bash benchmarks/gpu_check.sh --device cpu
#
# On a bare CUDA machine (torch, torchvision, triton only) detgn's pure-Python dependencies are
# installed from benchmarks/wheels/ (fill it first with: bash benchmarks/fetch_gpu_wheels.sh).
# PYTHON=.venv/bin/python picks the interpreter (default python3); ITERS / WARMUP set the timed steps;
# QUICKSTART=1 also trains and evaluates the quick-start recipe on the device (tools/train_net.py).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
ITERS=${ITERS:-10}
WARMUP=${WARMUP:-3}
if [[ "${1:-}" == "--device" ]]; then DEVICE=$2; fi
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD:${PYTHONPATH:-}

if ! $PY -c "import fvcore, pycocotools, iopath, tabulate" 2>/dev/null; then
  if [[ -d benchmarks/wheels ]]; then
    $PY -m pip install -q --no-index --find-links benchmarks/wheels fvcore iopath yacs pycocotools tabulate termcolor portalocker pyyaml tqdm || exit 2
  else
    echo "error: fvcore/pycocotools missing and benchmarks/wheels/ absent (run benchmarks/fetch_gpu_wheels.sh where PyPI is reachable)" >&2
    exit 2
  fi
fi
$PY - <<'PYEOF'
import torch, torchvision
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, cuda {torch.cuda.is_available()}",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PYEOF

echo "== CUDA tests =="
DETGN_TEST_DEVICE=$DEVICE timeout 240 $PY -m pytest -q -p no:cacheprovider -rs tests/modeling/test_device.py \
    tests/engine/test_amp_trainer.py tests/engine/test_precision.py tests/layers/test_fused_group_norm.py \
    tests/modeling/test_compile.py 2>&1 | tail -8

echo "== host synchronisations per training step (800x1333, 2 images) =="
for AMP in none bf16; do
  timeout 120 $PY benchmarks/count_syncs.py --amp "$AMP" 2>&1 | grep -v "^W\|Warning" | tail -20
done

echo "== benchmarks: detgn vs torchvision GN Mask R-CNN, 800x1333, 2 images =="
RESULTS=${OUT:-/tmp}/gpu_check_results.jsonl
rm -f "$RESULTS"
THREADS=$(nproc)
for AMP in none bf16 fp16; do
  if [[ "$DEVICE" == "cpu" && "$AMP" == "fp16" ]]; then continue; fi
  timeout 200 $PY benchmarks/compare_torchvision.py --height 800 --width 1333 --images 2 --iters "$ITERS" --warmup "$WARMUP" \
      --amp "$AMP" --device "$DEVICE" --threads "$THREADS" --json "$RESULTS" 2>&1 | grep -v "^W\|Warning" | tail -6
done
echo "== summary (median seconds; train = one step of 2 images, infer = one batch of 2 images) =="
$PY - "$RESULTS" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])] if len(sys.argv) > 1 else []
print(f"{'amp':6s} {'task':6s} {'detgn':>9s} {'torchvision':>12s} {'ratio':>7s}  {'detgn s/img':>11s}")
for r in rows:
    print(f"{r['amp']:6s} {r['task']:6s} {r['detgn_s']:9.4f} {r['torchvision_s']:12.4f} {r['ratio']:7.3f}  {r['detgn_s'] / r['images']:11.4f}  ({r['device']})")
PYEOF

echo "== detgn variants, bf16, 800x1333, 2 images (tools/benchmark.py; warm-up = compilation where compiled) =="
GN=configs/GN/mask_rcnn_R_50_FPN_3x_gn.yaml
CL="MODEL.MEMORY_FORMAT channels_last"
TR="MODEL.GROUP_NORM.IMPL triton"
VARIANTS=("$GN|" "$GN|$CL" "$GN|$CL $TR" "$GN|$CL $TR MODEL.COMPILE.PARTS ['box_head','mask_head']"
          "$GN|$CL $TR MODEL.COMPILE.PARTS ['backbone','box_head','mask_head']" "configs/Misc/mask_rcnn_R_50_FPN_1x_frozenbn.yaml|")
for V in "${VARIANTS[@]}"; do
  CFG=${V%%|*}; OPTS=${V#*|}
  echo "-- $CFG $OPTS"
  # shellcheck disable=SC2086
  timeout 150 $PY tools/benchmark.py --config-file "$CFG" --task train --precision bf16 --size 800 --max-size 1333 --images 2 \
      --iters "$ITERS" --warmup "$WARMUP" --json "${OUT:-/tmp}/gpu_variants.jsonl" MODEL.DEVICE "$DEVICE" $OPTS 2>&1 \
      | grep -E "seconds per iteration|peak memory|warm-up|error" | head -4
done

echo "== activation checkpointing: peak memory (CUDA max allocated) and step time, fp32 and bf16, 800x1333, 2 images =="
for PREC in fp32 bf16; do
  PYTHON=$PY ITERS=5 WARMUP=2 OUT=${OUT:-/tmp} timeout 240 bash benchmarks/activation_checkpoint.sh "$DEVICE" "$PREC" 2>&1 \
      | grep -v "^W\|Warning"
done

if [[ "${QUICKSTART:-0}" == "1" ]]; then
  echo "== quick start on $DEVICE: configs/nuclei_quickstart.yaml, automatic precision =="
  QS_OUT=/tmp/quickstart_$DEVICE
  START=$(date +%s)
  timeout 300 $PY tools/train_net.py --config-file configs/nuclei_quickstart.yaml MODEL.DEVICE "$DEVICE" \
      OUTPUT_DIR "$QS_OUT" ${QS_OPTS:-} 2>&1 | grep -E "precision|eta:|copypaste|Error|error" | tail -14
  if [[ -n "${OUT:-}" ]]; then cp "$QS_OUT/metrics.json" "$OUT/quickstart_metrics.json" 2>/dev/null; fi
  echo "quick start wall time: $(( $(date +%s) - START )) s (train + eval, model build and data loading included)"
fi
