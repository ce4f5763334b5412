"""Stop a training run for a restart: checkpoint at the end of the current iteration, then exit.

What asks for it: SIGTERM (SLURM preemption and `scancel`, a job reaching its time limit, torchrun's
agent stopping its workers, `kill <pid>`), SIGUSR1 (`sbatch --signal=USR1@<seconds>`) and SIGUSR2
(submitit's time-limit signal). The handler only records the request; the training loop checks it after
every iteration, all ranks agree on it through one small all-reduce (`comm.any_rank`), so every process
stops after the same iteration whichever got the signal first; the checkpointer hook saves
`model_<iter>.pth` and `last_checkpoint`, and the loop raises `TrainingPreempted`. The training tools
exit with status 128 + the signal number, and the next start continues exactly there (`--resume`, or
`--auto-resume`, which a job that SLURM or torchrun restarts implies: see `implied_auto_resume`).

Ctrl-C (SIGINT) is not one of these: it stops after the iteration without a checkpoint (train_loop.py).
"""

import contextlib
import logging
import os
import signal
import threading
from typing import Optional

__all__ = [
    "CHECKPOINT_SIGNALS",
    "TrainingPreempted",
    "checkpoint_on_signals",
    "requested_signal",
    "request_checkpoint_stop",
    "clear_checkpoint_stop",
    "implied_auto_resume",
]

logger = logging.getLogger(__name__)

CHECKPOINT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, n))
_requested: Optional[int] = None  # the signal number of the first request
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
    global _requested
    if _requested is None:
        _requested = signum


def clear_checkpoint_stop() -> None:
    global _requested
    _requested = None


def requested_signal() -> Optional[int]:
    """The signal that asked this process to checkpoint and stop (None when none did)."""
    return _requested


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
        first = _requested is None
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


def implied_auto_resume(env=None) -> Optional[str]:
    """Why this start of a training tool must continue the run in its OUTPUT_DIR by itself (--auto-resume), or
    None. SLURM_RESTART_COUNT > 0: SLURM requeued the job (preemption, `scontrol requeue`, submitit). And
    TORCHELASTIC_MAX_RESTARTS > 0: torchrun was started with --max-restarts, so this start may be a restart;
    TORCHELASTIC_RESTART_COUNT cannot tell, because a node whose workers were healthy restarts them with a
    count of 0 when another node's failed."""
    env = os.environ if env is None else env

    def number(var):
        try:
            return int(env.get(var, "0") or 0)
        except ValueError:
            return 0

    if number("SLURM_RESTART_COUNT") > 0:
        return f"SLURM requeued this job (SLURM_RESTART_COUNT={number('SLURM_RESTART_COUNT')})"
    if number("TORCHELASTIC_MAX_RESTARTS") > 0:
        return (
            f"torchrun restarts this job's workers (--max-restarts {number('TORCHELASTIC_MAX_RESTARTS')}; "
            f"TORCHELASTIC_RESTART_COUNT={number('TORCHELASTIC_RESTART_COUNT')})"
        )
    return None
