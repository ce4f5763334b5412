"""Where a process started by SLURM's `srun` (one task per GPU, no torchrun) belongs in the job.

srun exports, per task: SLURM_PROCID (global rank), SLURM_LOCALID (rank on its node), SLURM_STEP_NUM_TASKS
(or SLURM_NTASKS: the world size), SLURM_STEP_NODELIST / SLURM_JOB_NODELIST (compressed host list, e.g.
"gpu[003-004,010],login1") and SLURM_JOB_ID. `apply_slurm_environment()` turns them into the variables
torchrun would have set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR = the first host of the list, MASTER_PORT =
$MASTER_PORT if set, else environment.job_port(job id)), so the training tools join the job through env:// as
under torchrun.

Precedence: torchrun's variables win (RANK and WORLD_SIZE already set: SLURM is not read); MASTER_ADDR and
MASTER_PORT set by the user win over the derived ones. Only an srun step is mapped (SLURM_STEP_NUM_TASKS
present): a plain `python train_net.py` inside an sbatch script stays a single-machine launch.
"""

import os
import re
from typing import List, Optional

from .environment import torchrun_env
from .launch_checks import LaunchError

__all__ = ["expand_hostlist", "slurm_environment", "apply_slurm_environment", "SlurmEnvError"]


class SlurmEnvError(LaunchError):
    """A SLURM variable that cannot be read (a malformed host list, an empty task count)."""


def _bad_hostlist(hostlist: str, why: str) -> SlurmEnvError:
    shown = hostlist if len(hostlist) <= 80 else hostlist[:80] + "..."
    return SlurmEnvError(
        f"SLURM host list {shown!r} is malformed ({why}); set MASTER_ADDR to the host of rank 0 (e.g. "
        "MASTER_ADDR=$(scontrol show hostnames | head -n1)) and start again"
    )


def _expand_one(host: str, whole: str) -> List[str]:
    m = re.search(r"\[([^\]]*)\]", host)
    if not m:
        if "[" in host or "]" in host:
            raise _bad_hostlist(whole, f"unbalanced bracket in {host!r}")
        return [host]
    head, tail = host[: m.start()], host[m.end() :]
    out = []
    for part in m.group(1).split(","):
        bounds = part.split("-")
        if not all(re.fullmatch(r"\d+", b) for b in bounds) or len(bounds) > 2:
            raise _bad_hostlist(whole, f"{part!r} is not a number or a range of numbers")
        if len(bounds) == 2:
            lo, hi = bounds
            if int(hi) < int(lo):
                raise _bad_hostlist(whole, f"range {part!r} runs backwards")
            if int(hi) - int(lo) > 100000:
                raise _bad_hostlist(whole, f"range {part!r} names more than 100000 hosts")
            out += [f"{head}{str(i).zfill(len(lo))}" for i in range(int(lo), int(hi) + 1)]
        else:
            out.append(head + part)
    return [h for x in out for h in _expand_one(x + tail, whole)]


def expand_hostlist(hostlist: str) -> List[str]:
    """'gpu[003-004,010],login1' -> ['gpu003', 'gpu004', 'gpu010', 'login1'] (SLURM's compressed form, zero
    padding kept, several bracket groups per name), without calling `scontrol`, which may be absent. A list that
    is not of that form (an unclosed bracket, letters in a range) raises SlurmEnvError in one line."""
    hosts, depth, cur = [], 0, ""
    for ch in hostlist:
        if ch == "," and depth == 0:
            hosts.append(cur)
            cur = ""
            continue
        depth += (ch == "[") - (ch == "]")
        if depth not in (0, 1):
            raise _bad_hostlist(hostlist, "nested or unbalanced brackets")
        cur += ch
    if depth != 0:
        raise _bad_hostlist(hostlist, "a bracket is not closed")
    if cur:
        hosts.append(cur)
    out = [h for x in hosts if x.strip() for h in _expand_one(x.strip(), hostlist)]
    if not out:
        raise _bad_hostlist(hostlist, "no host")
    return out


def _task_count(env) -> int:
    for name in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
        raw = (env.get(name) or "").strip()
        if raw:
            if not re.fullmatch(r"\d+", raw) or int(raw) < 1:
                raise SlurmEnvError(
                    f"{name}={raw!r} is not a number of tasks >= 1; start the job with srun, which sets it"
                )
            return int(raw)
    raise SlurmEnvError(
        "SLURM_STEP_NUM_TASKS and SLURM_NTASKS are empty: the number of tasks is unknown; start the step with srun "
        "(which sets them) or launch with torchrun"
    )


def slurm_environment(env=None) -> Optional[dict]:
    """The torchrun-style variables for an srun task (None when not in an srun step, or under torchrun). A
    one-task step joins on 127.0.0.1 without reading the host list."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return None
    if "SLURM_PROCID" not in env or "SLURM_STEP_NUM_TASKS" not in env:
        return None
    world = _task_count(env)
    if env.get("MASTER_ADDR"):
        master = env["MASTER_ADDR"]
    elif world == 1:
        master = "127.0.0.1"
    else:
        master = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1")[0]
    return torchrun_env(
        rank=env["SLURM_PROCID"],
        world_size=world,
        local_rank=env.get("SLURM_LOCALID", "0"),
        hosts=[master],
        job_id=env.get("SLURM_JOB_ID", "0"),
        master_port=env.get("MASTER_PORT") or None,
    )


def apply_slurm_environment() -> Optional[dict]:
    """Set the variables of slurm_environment() in os.environ (returns them, or None when nothing applies)."""
    mapped = slurm_environment()
    if mapped:
        os.environ.update(mapped)
    return mapped
