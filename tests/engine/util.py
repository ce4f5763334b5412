import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = os.path.join(REPO, "configs", "quick_schedules", "mask_rcnn_R_50_FPN_gn_instant_test.yaml")
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


def run_train_net(args, env=None, timeout=900, **kw):
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "2")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, TRAIN_NET] + list(args), cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout, **kw)


def popen_train_net(args, env=None, capture=False):
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "2")
    if env:
        e.update(env)
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, TRAIN_NET] + list(args), cwd=REPO, env=e, stdout=out, stderr=out, text=capture or None)
