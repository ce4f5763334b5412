#!/usr/bin/env bash
# The CPU measurements of docs/benchmarks.md, in one go (about 30 minutes on 2 cores).
# Usage: bash benchmarks/cpu_suite.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-output/cpu_suite}
mkdir -p "$OUT"
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=2
GN=configs/GN/mask_rcnn_R_50_FPN_3x_gn.yaml
FBN=(--calibrate-bn 3 MODEL.RESNETS.NORM BN MODEL.FPN.NORM BN MODEL.ROI_BOX_HEAD.NORM BN MODEL.ROI_MASK_HEAD.NORM BN)
# bf16 figures only where the CPU has AMX: elsewhere bf16 is emulated (1.5x to ~200x slower than fp32)
BF16=$($PY -c "from detgn.engine.precision import cpu_bf16_is_fast; print(int(cpu_bf16_is_fast()))")
$PY -c "from detgn.engine.precision import cpu_model, cpu_description; print('CPU:', cpu_model(), '(' + cpu_description() + ')')"
echo "== quick-start model: fp32 training step on real data =="
$PY tools/benchmark.py --config-file configs/nuclei_quickstart.yaml --task train --real --images 2 --iters 20 --warmup 3 --json "$OUT/quickstart.jsonl"
echo "== peers: detgn vs torchvision (same GN architecture), same process =="
$PY benchmarks/compare_torchvision.py --height 512 --width 512 --images 2 --iters 5 --warmup 2 --amp none --json "$OUT/peers.jsonl"
$PY benchmarks/compare_torchvision.py --height 800 --width 1067 --images 2 --iters 3 --warmup 1 --amp none --json "$OUT/peers.jsonl"
if [ "$BF16" = 1 ]; then
  $PY benchmarks/compare_torchvision.py --height 512 --width 512 --images 2 --iters 5 --warmup 2 --amp bf16 --json "$OUT/peers.jsonl"
  $PY benchmarks/compare_torchvision.py --height 800 --width 1067 --images 2 --iters 3 --warmup 1 --amp bf16 --json "$OUT/peers.jsonl"
fi
echo "== GN overhead: GN everywhere vs frozen BN everywhere (BN statistics estimated on the inputs, then frozen) =="
# LR 0: random-init weights without normalisation diverge after one step; the step still does all the work
AMPS=("")
[ "$BF16" = 1 ] && AMPS+=("--amp")
for AMP in "${AMPS[@]}"; do
  $PY tools/benchmark.py --config-file $GN --task train --size 512 --max-size 512 --images 2 --iters 4 --warmup 2 $AMP --json "$OUT/gn_vs_bn.jsonl" MODEL.DEVICE cpu SOLVER.BASE_LR 0.0
  $PY tools/benchmark.py --config-file $GN --task train --size 512 --max-size 512 --images 2 --iters 4 --warmup 2 $AMP --json "$OUT/gn_vs_bn.jsonl" "${FBN[@]}" MODEL.DEVICE cpu SOLVER.BASE_LR 0.0
done
echo "== data loader alone: nuclei quick start =="
$PY tools/benchmark.py --config-file configs/nuclei_quickstart.yaml --task data --images 2 --iters 40 --warmup 5 --json "$OUT/data.jsonl"
$PY tools/benchmark.py --config-file configs/nuclei_quickstart.yaml --task data --images 2 --iters 40 --warmup 5 --json "$OUT/data.jsonl" DATALOADER.NUM_WORKERS 0
