import os
import subprocess
import sys

from tests.util import QUICK, REPO, TINY_MODEL  # noqa: F401 - QUICK is re-exported to the engine tests

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


def run_train_net(args, env=None, timeout=900, **kw):
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "2")
    if env:
        e.update(env)
    return subprocess.run(
        [sys.executable, TRAIN_NET] + list(args), cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout, **kw
    )


def popen_train_net(args, env=None, capture=False):
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "2")
    if env:
        e.update(env)
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, TRAIN_NET] + list(args), cwd=REPO, env=e, stdout=out, stderr=out, text=capture or None
    )


# a narrow GN Mask R-CNN (R-18, 64-channel FPN and heads, few proposals): the same code paths as QUICK at
# a sixth of its step time, for the tests that train several runs to compare them bit for bit
SMALL_MODEL = TINY_MODEL + [
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "64",
]


def small_train_cfg(out, max_iter: int, *opts):
    """The quick-start data with SMALL_MODEL at 96-160 pixels, fp32, no workers, no evaluation, a checkpoint after every
    iteration: `max_iter` iterations into `out`, then `opts` (KEY VALUE pairs)."""
    from detgn.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(
        SMALL_MODEL
        + ["OUTPUT_DIR", str(out), "DATASETS.TEST", "()", "SOLVER.MAX_ITER", str(max_iter)]
        + ["SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.STEPS", "(10,)", "SOLVER.WARMUP_ITERS", "1"]
        + ["INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "160", "DATALOADER.NUM_WORKERS", "0"]
        + ["SOLVER.AMP.ENABLED", "False", *opts]
    )
    return cfg
