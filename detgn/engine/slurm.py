"""Where a process started by SLURM's `srun` (one task per GPU, no torchrun) belongs in the job.

srun exports, per task: SLURM_PROCID (global rank), SLURM_LOCALID (rank on its node), SLURM_STEP_NUM_TASKS
(or SLURM_NTASKS: the world size), SLURM_STEP_NODELIST / SLURM_JOB_NODELIST (compressed host list, e.g.
"gpu[003-004,010],login1") and SLURM_JOB_ID. `apply_slurm_environment()` turns them into the variables
torchrun would have set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR = the first host of the list, MASTER_PORT =
$MASTER_PORT if set, else 20000 + job id mod 20000), so the training tools join the job through env:// as
under torchrun.

Precedence: torchrun's variables win (RANK and WORLD_SIZE already set: SLURM is not read); MASTER_ADDR and
MASTER_PORT set by the user win over the derived ones. Only an srun step is mapped (SLURM_STEP_NUM_TASKS
present): a plain `python train_net.py` inside an sbatch script stays a single-machine launch.
"""

import os
import re
from typing import List, Optional

__all__ = ["expand_hostlist", "slurm_environment", "apply_slurm_environment"]


def _expand_one(host: str) -> List[str]:
    m = re.search(r"\[([^\]]*)\]", host)
    if not m:
        return [host]
    head, tail = host[: m.start()], host[m.end() :]
    out = []
    for part in m.group(1).split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out += [f"{head}{str(i).zfill(len(lo))}" for i in range(int(lo), int(hi) + 1)]
        else:
            out.append(head + part)
    return [h for x in out for h in _expand_one(x + tail)]


def expand_hostlist(hostlist: str) -> List[str]:
    """'gpu[003-004,010],login1' -> ['gpu003', 'gpu004', 'gpu010', 'login1'] (SLURM's compressed form, zero
    padding kept, several bracket groups per name), without calling `scontrol`, which may be absent."""
    hosts, depth, cur = [], 0, ""
    for ch in hostlist:
        if ch == "," and depth == 0:
            hosts.append(cur)
            cur = ""
            continue
        depth += (ch == "[") - (ch == "]")
        cur += ch
    if cur:
        hosts.append(cur)
    return [h for x in hosts if x for h in _expand_one(x.strip())]


def slurm_environment(env=None) -> Optional[dict]:
    """The torchrun-style variables for an srun task (None when not in an srun step, or under torchrun)."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return None
    if "SLURM_PROCID" not in env or "SLURM_STEP_NUM_TASKS" not in env:
        return None
    world = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS"))
    nodes = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1")
    job = int(re.sub(r"\D", "", env.get("SLURM_JOB_ID", "0")) or 0)
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": env.get("MASTER_ADDR") or nodes[0],
        "MASTER_PORT": env.get("MASTER_PORT") or str(20000 + job % 20000),
    }


def apply_slurm_environment() -> Optional[dict]:
    """Set the variables of slurm_environment() in os.environ (returns them, or None when nothing applies)."""
    mapped = slurm_environment()
    if mapped:
        os.environ.update(mapped)
    return mapped
