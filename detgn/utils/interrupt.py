"""Everything that stops a training run from outside, in one place: Ctrl-C, and the signals that ask for a
checkpoint first. The training loop (engine/train_loop.py) installs both while it trains and checks them
after every iteration; evaluation inside a hook checks the Ctrl-C request between images; the launcher
(jobs/launch.py) passes the checkpoint signals on to its workers.

Ctrl-C (SIGINT): the first one asks the loop to stop after the current iteration and its hooks, where it
raises KeyboardInterrupt (no checkpoint); a second one interrupts at once. So a Ctrl-C never lands inside
a C extension halfway through a step (where, e.g., numpy can turn it into a TypeError).

Checkpoint-and-stop: SIGTERM (SLURM preemption and `scancel`, a job reaching its time limit, torchrun's
agent stopping its workers, `kill <pid>`), SIGUSR1 (`sbatch --signal=USR1@<seconds>`) and SIGUSR2
(submitit's time-limit signal). The handler only records the request; the loop checks it after every
iteration, all ranks agree on it through one small all-reduce, so every process stops after the same
iteration whichever got the signal first; the checkpointer hook saves `model_<iter>.pth` and
`last_checkpoint`, and the loop raises `TrainingPreempted`. The training tools exit with status 128 + the
signal number, and the next start continues exactly there (`--resume`, or `--auto-resume`, which a job
that SLURM or torchrun restarts implies: jobs/environment.py).
"""

import contextlib
import logging
import signal
import threading
from typing import Optional

__all__ = [
    "request_stop",
    "clear_stop",
    "stop_requested",
    "raise_if_stop_requested",
    "stop_between_steps",
    "CHECKPOINT_SIGNALS",
    "TrainingPreempted",
    "checkpoint_on_signals",
    "requested_signal",
    "request_checkpoint_stop",
    "clear_checkpoint_stop",
    "previous_handler",
]

logger = logging.getLogger(__name__)

_requested = False  # Ctrl-C asked the loop to stop


def request_stop() -> None:
    global _requested
    _requested = True


def clear_stop() -> None:
    global _requested
    _requested = False


def stop_requested() -> bool:
    return _requested


def raise_if_stop_requested(where: str = "") -> None:
    """KeyboardInterrupt when Ctrl-C was pressed during training (the CLI then exits with status 130)."""
    if _requested:
        raise KeyboardInterrupt(where)


@contextlib.contextmanager
def stop_between_steps():
    """While training: the first Ctrl-C becomes a request (`stop_requested()`), a second one interrupts at once.
    Only in the main thread, and only when SIGINT has Python's default handler; otherwise a request made through
    `request_stop()` is still the loop's and ends with it."""
    clear_stop()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        try:
            yield
        finally:
            clear_stop()
        return

    def handler(signum, frame):
        request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logger.warning("Ctrl-C: stopping after this iteration or evaluation image (press Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        clear_stop()


CHECKPOINT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, n))
_signalled: Optional[int] = None  # the signal number of the first checkpoint request
_previous = {}  # signal number -> the handler checkpoint_on_signals replaced (submitit's, for one)


class TrainingPreempted(Exception):
    """Training stopped on a signal after saving a checkpoint; the same command with --resume or
    --auto-resume continues from it exactly."""

    def __init__(self, signum: int, iteration: Optional[int] = None, checkpoint: Optional[str] = None):
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        name = signal.Signals(signum).name
        when = f" after iteration {iteration}" if iteration is not None else ""
        saved = f", checkpoint {checkpoint} saved" if checkpoint else ""
        super().__init__(f"stopped by {name}{when}{saved}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def request_checkpoint_stop(signum: int) -> None:
    global _signalled
    if _signalled is None:
        _signalled = signum


def clear_checkpoint_stop() -> None:
    global _signalled
    _signalled = None


def requested_signal() -> Optional[int]:
    """The signal that asked this process to checkpoint and stop (None when none did)."""
    return _signalled


def previous_handler(signum: int):
    """The handler that was installed for `signum` before training took it over (e.g. submitit's)."""
    return _previous.get(signum)


@contextlib.contextmanager
def checkpoint_on_signals():
    """While training, CHECKPOINT_SIGNALS request a checkpoint-and-stop (see the module docstring).
    Only in the main thread (signal handlers can only be set there); the handlers replaced are restored
    afterwards and remembered in `previous_handler` (submitit's requeue handler is called from there once
    the checkpoint is on disk)."""
    clear_checkpoint_stop()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        first = _signalled is None
        request_checkpoint_stop(signum)
        if first:
            logger.warning(
                "%s received: saving a checkpoint after this iteration, then stopping", signal.Signals(signum).name
            )

    saved = {}
    for s in CHECKPOINT_SIGNALS:
        saved[s] = signal.signal(s, handler)
    _previous.update(saved)
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
