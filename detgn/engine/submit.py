"""Submit a training run to SLURM (or run it as local processes) through submitit, requeued until it is done.

    python tools/submit.py --nodes 4 --gpus-per-node 8 --partition P --time 72:00:00 -- \\
        --config-file configs/GN/mask_rcnn_R_50_FPN_3x_gn.yaml

One submitit task per GPU; every task runs the training tool's `cli` with RANK/WORLD_SIZE/LOCAL_RANK/
LOCAL_WORLD_SIZE/MASTER_ADDR/MASTER_PORT taken from submitit's JobEnvironment (the first host of the job,
a port derived from the job id), so the tool joins the job as under torchrun. The tool always runs with
--auto-resume: a requeued job continues the run in OUTPUT_DIR exactly.

Time limit and preemption: sbatch gets `--signal=USR2@<signal-delay>` (submitit's time-limit signal) and
`--requeue`. On USR2 every rank checkpoints after the same iteration and stops (preemption.py); then rank
0 hands over to submitit's handler, which calls `TrainingJob.checkpoint()` (the same job again) and
requeues the job with `scontrol requeue`. SIGTERM (preemption with PreemptMode=REQUEUE, or scancel) also
checkpoints and stops; SLURM decides whether the job comes back.
"""

import importlib.util
import os
import re
import signal
import sys
from typing import Dict, List, Optional

from detgn.utils.errors import UserInputError

__all__ = ["SubmitError", "TrainingJob", "parse_time_minutes", "slurm_parameters", "DEFAULT_TOOL"]

DEFAULT_TOOL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools", "train_net.py"
)
# train_net options that the job decides (one process per task, ranks from the job)
_JOB_OWNED = ("--num-gpus", "--num-machines", "--machine-rank", "--dist-url", "--overwrite")


class SubmitError(UserInputError, ValueError):
    """A submission option or training argument that cannot work; reported in one line before anything is queued."""


def parse_time_minutes(text: str) -> int:
    """SLURM's time formats to whole minutes: 'MM', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS' (seconds round up)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise SubmitError(f"--time {text!r} is not a SLURM time (MM, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    # as sbatch: minutes and seconds after a colon are 0-59, hours after a day count 0-23 ('1:99:99' is refused)
    limits = [(b, 59, "minutes" if (c is not None or days is not None) else "seconds"), (c, 59, "seconds")]
    if days is not None:
        limits.append((a, 23, "hours"))
    for value, top, name in limits:
        if value is not None and int(value) > top:
            raise SubmitError(
                f"--time {text!r}: {name} {int(value)} > {top}; sbatch refuses it (formats: MM, MM:SS, HH:MM:SS, "
                "D-HH, D-HH:MM, D-HH:MM:SS)"
            )
    if days is None and b is None:  # 'MM'
        return int(a)
    if days is None and c is None:  # 'MM:SS'
        return int(a) + (int(b) > 0)
    if days is None:  # 'HH:MM:SS'
        return int(a) * 60 + int(b) + (int(c) > 0)
    hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
    return int(days) * 1440 + hours * 60 + minutes + (seconds > 0)


def _extra_sbatch(pairs: List[str]) -> Dict[str, object]:
    extra = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        key = key.strip().lstrip("-")
        if not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise SubmitError(
                f"--sbatch {p!r}: expected KEY=VALUE (e.g. --sbatch mail-type=END) or a flag KEY (e.g. --sbatch exclusive)"
            )
        extra[key.replace("-", "_")] = value if eq else True
    return extra


def slurm_parameters(
    *,
    nodes: int,
    gpus_per_node: int,
    tasks_per_node: Optional[int],
    time_minutes: int,
    partition: Optional[str],
    account: Optional[str],
    qos: Optional[str],
    constraint: Optional[str],
    job_name: str,
    cpus_per_task: Optional[int],
    mem: Optional[str],
    signal_delay_s: int,
    sbatch: List[str],
    setup: List[str],
) -> Dict[str, object]:
    """The keyword arguments of submitit's SlurmExecutor.update_parameters for a training job: one task per GPU
    (or `tasks_per_node` CPU processes), `--requeue`, the time-limit signal `signal_delay_s` seconds early."""
    if nodes < 1:
        raise SubmitError(f"--nodes must be >= 1, got {nodes}")
    tasks = tasks_per_node if tasks_per_node is not None else gpus_per_node
    if tasks < 1:
        raise SubmitError("--gpus-per-node 0 needs --tasks-per-node N (CPU processes per node, with MODEL.DEVICE cpu)")
    if gpus_per_node and tasks != gpus_per_node:
        raise SubmitError(
            f"--tasks-per-node {tasks} with --gpus-per-node {gpus_per_node}: detgn runs one process per GPU; "
            "leave --tasks-per-node out"
        )
    if time_minutes * 60 <= signal_delay_s:
        raise SubmitError(f"--time ({time_minutes} min) must be longer than --signal-delay ({signal_delay_s} s)")
    extra = {"requeue": True}
    extra.update(_extra_sbatch(sbatch))
    params = {
        "nodes": nodes,
        "ntasks_per_node": tasks,
        "time": time_minutes,
        "job_name": job_name,
        "signal_delay_s": signal_delay_s,
        "additional_parameters": extra,
    }
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    for key, value in (
        ("partition", partition),
        ("account", account),
        ("qos", qos),
        ("constraint", constraint),
        ("cpus_per_task", cpus_per_task),
        ("mem", mem),
    ):
        if value is not None:
            params[key] = value
    if setup:
        params["setup"] = list(setup)
    return params


def check_training_args(argv: List[str]) -> None:
    """The training arguments must leave the job's shape to the job (no --num-gpus, --dist-url ...)."""
    for token in argv:
        name = token.split("=", 1)[0]
        if name in _JOB_OWNED:
            raise SubmitError(
                f"{name} is decided by the job (one process per task; --nodes/--gpus-per-node give the shape, a "
                "requeued job must continue its run): remove it from the training arguments"
            )
        if name == "--eval-only":
            raise SubmitError(
                "--eval-only jobs are not requeued runs; run tools/train_net.py --eval-only inside your own sbatch script"
            )


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
        tool: str = DEFAULT_TOOL,
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
        job_digits = int(re.sub(r"\D", "", str(env.job_id)) or 0)
        return {
            "RANK": str(env.global_rank),
            "WORLD_SIZE": str(env.num_tasks),
            "LOCAL_RANK": str(env.local_rank),
            "LOCAL_WORLD_SIZE": str(env.num_tasks // max(env.num_nodes, 1)),
            "MASTER_ADDR": self.master_addr
            or ("127.0.0.1" if env.num_nodes == 1 and env.cluster == "local" else hosts[0]),
            "MASTER_PORT": str(self.master_port or 20000 + job_digits % 20000),
        }

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
