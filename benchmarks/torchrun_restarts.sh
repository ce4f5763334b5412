#!/bin/bash
# How often a torchrun elastic restart on two "nodes" (two agents on 127.0.0.1, c10d rendezvous) joins and
# finishes: rank 1 is SIGKILLed after iteration 2, --max-restarts 1. Usage:
#   bash benchmarks/torchrun_restarts.sh RUNS [shared|separate]
# shared: torch's default shared rendezvous store; separate: TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1.
# Prints one line per run (both agents' exit codes) and the count that finished.
set -u
RUNS=${1:-5}; MODE=${2:-separate}
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ "$MODE" = separate ] && export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 || unset TORCH_DISABLE_SHARE_RDZV_TCP_STORE
ok=0
for i in $(seq "$RUNS"); do
  D=$(mktemp -d); PORT=$($PY -c "from detgn.jobs.launch import find_free_port as f; print(f())")
  for r in 0 1; do
    DETGN_TEST_FAULT=1:2:SIGKILL OMP_NUM_THREADS=1 timeout 180 $PY -m torch.distributed.run --nnodes 2 --node-rank $r \
      --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:$PORT --max-restarts 1 --monitor-interval 0.5 \
      tests/engine/fault_train_net.py --dist-timeout 120 --config-file configs/quick_schedules/mask_rcnn_R_50_FPN_gn_instant_test.yaml \
      SOLVER.MAX_ITER 4 SOLVER.CHECKPOINT_PERIOD 2 'DATASETS.TEST' '()' DATALOADER.NUM_WORKERS 0 OUTPUT_DIR $D/out \
      > $D/node$r.log 2>&1 &
  done
  wait %1; a=$?; wait %2; b=$?
  echo "run $i ($MODE store): agents exited $a $b (logs in $D)"
  [ $a = 0 ] && [ $b = 0 ] && ok=$((ok + 1))
done
echo "$ok of $RUNS restarts finished ($MODE store)"
