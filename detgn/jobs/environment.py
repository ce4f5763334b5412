"""What a job's environment says about this process: where it joins the job (`torchrun_env`, shared by the
srun mapping in slurm.py and submitit's TrainingJob in submit.py) and whether this start is a restart that
must continue its run (`implied_auto_resume`)."""

import os
import re
from typing import Dict, Optional, Sequence

__all__ = ["torchrun_env", "job_port", "implied_auto_resume"]


def job_port(job_id) -> int:
    """The rendezvous port every task of a job derives alike from its job id: 20000 + (digits of the id) mod 20000."""
    digits = re.sub(r"\D", "", str(job_id))[:18]
    return 20000 + int(digits or 0) % 20000


def torchrun_env(
    *,
    rank,
    world_size,
    local_rank,
    hosts: Sequence[str],
    job_id,
    local_world_size=None,
    master_addr: Optional[str] = None,
    master_port=None,
) -> Dict[str, str]:
    """The variables torchrun would set for this process (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
    and LOCAL_WORLD_SIZE when given): MASTER_ADDR = `master_addr` or the first of `hosts`, MASTER_PORT =
    `master_port` or `job_port(job_id)`, so every task of the job, on every node, agrees without talking."""
    env = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(local_rank),
        "MASTER_ADDR": master_addr or hosts[0],
        "MASTER_PORT": str(master_port or job_port(job_id)),
    }
    if local_world_size is not None:
        env["LOCAL_WORLD_SIZE"] = str(local_world_size)
    return env


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
