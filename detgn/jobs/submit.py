"""The job that tools/submit.py hands to submitit (SLURM, or local processes), requeued until it is done.

    python tools/submit.py --nodes 4 --gpus-per-node 8 --partition P --time 72:00:00 -- \\
        --config-file configs/GN/mask_rcnn_R_50_FPN_3x_gn.yaml

One submitit task per GPU; every task runs the training tool's `cli` with RANK/WORLD_SIZE/LOCAL_RANK/
LOCAL_WORLD_SIZE/MASTER_ADDR/MASTER_PORT taken from submitit's JobEnvironment (the first host of the job,
a port derived from the job id), so the tool joins the job as under torchrun. The tool always runs with
--auto-resume: a requeued job continues the run in OUTPUT_DIR exactly.

Time limit and preemption: sbatch gets `--signal=USR2@<signal-delay>` (submitit's time-limit signal) and
`--requeue`. On USR2 every rank checkpoints after the same iteration and stops (utils/interrupt.py); then rank
0 hands over to submitit's handler, which calls `TrainingJob.checkpoint()` (the same job again) and
requeues the job with `scontrol requeue`. SIGTERM (preemption with PreemptMode=REQUEUE, or scancel) also
checkpoints and stops; SLURM decides whether the job comes back.
"""

import importlib.util
import os
import signal
import sys
from typing import Dict, List, Optional

from detgn.utils.errors import UserInputError

from .environment import torchrun_env

__all__ = ["SubmitError", "TrainingJob", "load_tool"]


class SubmitError(UserInputError, ValueError):
    """A submission option or training argument that cannot work; reported in one line before anything is queued."""


def load_tool(path: str):
    """The training tool at `path` (tools/train_net.py or one like it) as a module; it must have cli(argv)."""
    spec = importlib.util.spec_from_file_location(f"detgn_job_tool_{os.path.splitext(os.path.basename(path))[0]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "cli"):
        raise SubmitError(f"{path} has no cli(argv) function to run")
    return module


class TrainingJob:
    """What each submitit task runs: the training tool's cli(argv + ['--auto-resume']) in the job's process group.

    Pickled by submitit (cloudpickle) with the tool's path and arguments only; `checkpoint()` is submitit's
    requeue protocol and returns the same job (the run's state is in its OUTPUT_DIR, not in this object)."""

    def __init__(
        self,
        argv: List[str],
        tool: str,
        master_port: Optional[int] = None,
        master_addr: Optional[str] = None,
    ):
        self.argv = list(argv)
        self.tool = os.path.abspath(tool)
        self.master_port = master_port
        self.master_addr = master_addr

    def _join_environment(self) -> Dict[str, str]:
        import submitit

        env = submitit.JobEnvironment()
        hosts = list(getattr(env, "hostnames", None) or [env.hostname])
        local = env.num_nodes == 1 and env.cluster == "local"
        return torchrun_env(
            rank=env.global_rank,
            world_size=env.num_tasks,
            local_rank=env.local_rank,
            local_world_size=env.num_tasks // max(env.num_nodes, 1),
            hosts=["127.0.0.1"] if local else hosts,
            job_id=env.job_id,
            master_addr=self.master_addr,
            master_port=self.master_port,
        )

    def __call__(self) -> int:
        os.environ.update(self._join_environment())
        status = load_tool(self.tool).cli(self.argv + ["--auto-resume"])
        if status == 0:
            return 0
        signum = status - 128
        if signum in (getattr(signal, "SIGUSR1", -1), getattr(signal, "SIGUSR2", -1)) and os.environ["RANK"] == "0":
            handler = signal.getsignal(signum)  # submitit's again, now that training has stopped
            if callable(handler):
                handler(signum, None)  # submitit: checkpoint() -> requeue -> exit
        sys.exit(status)  # other ranks, SIGTERM (SLURM decides about a requeue) and errors: the tool's own status

    def checkpoint(self, *args, **kwargs):
        """submitit's requeue protocol: run this same job again; --auto-resume continues from the checkpoint
        the stopped run wrote."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainingJob(self.argv, self.tool, self.master_port, self.master_addr))
