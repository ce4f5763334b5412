"""tools/train_net.py with a fault injected at a fixed iteration, for the restart tests.

DETGN_TEST_FAULT="RANK:ITER:SIGNAL" (e.g. "1:2:SIGKILL"): global rank RANK sends SIGNAL to itself after
iteration ITER (after every other hook, so that iteration's periodic checkpoint is already saved), only in
a run that started at iteration 0, so the restarted run goes through.
DETGN_TEST_FAULT_FORWARD="N:SIGNAL" (e.g. "4:SIGTERM"): rank 0 sends SIGNAL to itself in the middle of a step, at its
N-th model forward (0-based; with k micro-batches per step, forward N is micro-batch N % k of iteration N // k), only
in a run that started at iteration 0.
DETGN_TEST_RECORD=DIR: every rank appends, per iteration, the image ids of its batch with a checksum of
each augmented image to DIR/rank<R>.jsonl (the sample stream, augmentations included).
Runs as a script (torchrun, a subprocess) and provides `cli(argv)` for tests that import it.
"""

import json
import os
import signal
import sys
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, REPO)

import train_net  # noqa: E402

from detgn.engine import DefaultTrainer  # noqa: E402
from detgn.engine.step_runner import StepRunner  # noqa: E402
from detgn.engine.train_loop import HookBase  # noqa: E402
from detgn.utils import comm  # noqa: E402


class _Fault(HookBase):
    def __init__(self, rank: int, iteration: int, signum: int):
        self.rank, self.iteration, self.signum = rank, iteration, signum

    def after_step(self):
        if self.trainer.start_iter == 0 and self.trainer.iter == self.iteration and comm.get_rank() == self.rank:
            os.kill(os.getpid(), self.signum)


_build_hooks = DefaultTrainer.build_hooks


def _build_hooks_with_fault(self):
    hooks = _build_hooks(self)
    spec = os.environ.get("DETGN_TEST_FAULT")
    if spec:
        rank, iteration, name = spec.split(":")
        hooks.append(_Fault(int(rank), int(iteration), getattr(signal, name)))
    return hooks


class _Recording:
    def __init__(self, loader, start_iter: int, path: str):
        self.loader, self.start_iter, self.path = loader, start_iter, path

    def __iter__(self):
        for n, batch in enumerate(self.loader):
            items = [[d["image_id"], zlib.crc32(d["image"].numpy().tobytes())] for d in batch]
            with open(self.path, "a") as f:
                f.write(json.dumps({"iteration": self.start_iter + n, "items": items}) + "\n")
            yield batch


_build_train_loader = DefaultTrainer.build_train_loader


def _build_recorded_train_loader(self):
    loader = _build_train_loader(self)
    folder = os.environ.get("DETGN_TEST_RECORD")
    if not folder:
        return loader
    os.makedirs(folder, exist_ok=True)
    return _Recording(loader, self.start_iter, os.path.join(folder, f"rank{comm.get_rank()}.jsonl"))


_forward = StepRunner._forward
_forwards = []


def _forward_with_fault(self, data):
    spec = os.environ.get("DETGN_TEST_FAULT_FORWARD")
    if spec and self.start_iter == 0 and comm.get_rank() == 0:
        n, name = spec.split(":")
        if len(_forwards) == int(n):
            os.kill(os.getpid(), getattr(signal, name))
        _forwards.append(self.iter)
    return _forward(self, data)


StepRunner._forward = _forward_with_fault
DefaultTrainer.build_hooks = _build_hooks_with_fault
DefaultTrainer.build_train_loader = _build_recorded_train_loader
cli = train_net.cli

if __name__ == "__main__":
    sys.exit(cli())
