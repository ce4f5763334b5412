#!/usr/bin/env bash
# One-call device check of issue 16's tools (< 4 minutes on one H100/H200): the small classifier recipe
# (configs/ImageNet/R_18_GN_nuclei_crops.yaml) trained and evaluated on CUDA with the automatic
# precision, its checkpoint loaded into the quick-start detector, and tools/norm_study.py --quick on CUDA.
# On a bare CUDA machine detgn's pure-Python dependencies come from benchmarks/wheels/ (fetch_gpu_wheels.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD:${PYTHONPATH:-}
if ! $PY -c "import fvcore, pycocotools, iopath, tabulate" 2>/dev/null; then
  $PY -m pip install -q --no-index --find-links benchmarks/wheels fvcore iopath yacs pycocotools tabulate termcolor portalocker pyyaml tqdm || exit 2
fi
OUT_DIR=${OUT:-/tmp}
echo "== crops =="
$PY tools/make_crop_dataset.py --output /tmp/nuclei_crops
echo "== classifier on cuda =="
START=$(date +%s)
timeout 240 $PY tools/train_classifier.py --config-file configs/ImageNet/R_18_GN_nuclei_crops.yaml MODEL.DEVICE cuda \
    DATALOADER.NUM_WORKERS 4 CLASSIFIER.TRAIN_DIR /tmp/nuclei_crops/train CLASSIFIER.VAL_DIR /tmp/nuclei_crops/val \
    OUTPUT_DIR /tmp/cls_cuda 2>&1 | grep -E "Precision|Schedule|Learning rate|Evaluation on|Total training|Error|error" | tail -12
echo "classifier wall time: $(( $(date +%s) - START )) s"
cp /tmp/cls_cuda/metrics.json "$OUT_DIR/classifier_cuda_metrics.json" 2>/dev/null
$PY - <<'PYEOF'
from detgn.checkpoint import DetectionCheckpointer
from detgn.config import get_cfg
from detgn.modeling import build_model
cfg = get_cfg(); cfg.merge_from_file("configs/nuclei_quickstart.yaml"); cfg.MODEL.DEVICE = "cuda"
ck = DetectionCheckpointer(build_model(cfg)); ck.load("/tmp/cls_cuda/model_final.pth", checkpointables=[])
r = ck.last_report
print("into the detector: matched", len(r["matched"]), "missing backbone", [k for k in r["missing"] if k.startswith("backbone.bottom_up")],
      "unused", r["unused"])
PYEOF
echo "== norm study --quick on cuda =="
timeout 200 $PY tools/norm_study.py --quick --device cuda --output /tmp/ns_cuda 2>&1 | tail -9
