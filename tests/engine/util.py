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
