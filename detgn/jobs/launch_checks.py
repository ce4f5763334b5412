"""What a launch is told, checked before any process starts or waits: the command-line layout (--num-gpus,
--num-machines, --machine-rank, --dist-url) and the torchrun-style variables. A wrong value would otherwise run as
an impossible rank and wait --dist-timeout (30 minutes by default) for machines that can never join."""

import os
import re
from typing import Mapping, Optional
from urllib.parse import urlsplit

from detgn.utils.errors import UserInputError

__all__ = ["LaunchError", "check_launch_args", "check_dist_url", "check_rank_environment"]

_ENV_LAYOUT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")


class LaunchError(UserInputError, ValueError):
    """A launch argument or variable that cannot describe a job."""


def check_dist_url(url: str, num_machines: int) -> None:
    """'auto' (one machine), tcp://<host>:<port> (port 1..65535) or file://<path> (a file system every machine
    shares); anything else is refused naming the forms accepted."""
    if url == "auto":
        return
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or not 0 < port < 65536:
            raise LaunchError(
                f"--dist-url {url}: give tcp://<host>:<port> with a port in 1..65535 (e.g. tcp://10.0.0.1:29500)"
            )
        return
    if parts.scheme == "file":
        if not parts.path:
            raise LaunchError(f"--dist-url {url}: give file:///<path on a file system every machine shares>")
        return
    raise LaunchError(
        f"--dist-url {url}: unsupported scheme {parts.scheme or '(none)'!r}; use tcp://<host of machine 0>:<port>, "
        "file:///<shared path>, or auto (one machine)"
    )


def _int_var(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "")
    if not re.fullmatch(r"\s*\d+\s*", raw):
        raise LaunchError(f"{name}={raw!r} is not a number >= 0: it must be set by torchrun/SLURM or left unset")
    return int(raw)


def check_rank_environment(env: Optional[Mapping[str, str]] = None) -> Optional[dict]:
    """None when no variable of a torchrun layout is set (a launch from the command line); else the layout
    {rank, world_size, local_rank} when RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR are all set and consistent.
    A partial or impossible set (RANK without WORLD_SIZE, RANK >= WORLD_SIZE, a non-number) is refused: ignoring
    it would start another job than the one meant."""
    env = os.environ if env is None else env
    present = [k for k in _ENV_LAYOUT if k in env]
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None
    missing = [k for k in _ENV_LAYOUT if k not in present]
    if missing:
        given = ", ".join(f"{k}={env[k]}" for k in present)
        raise LaunchError(
            f"{given} set but {', '.join(missing)} not: start with torchrun (or srun) which sets them all, or unset "
            "the partial set to launch with --num-gpus/--num-machines"
        )
    rank, world, local = (_int_var(env, k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if world < 1 or rank >= world:
        raise LaunchError(f"RANK={rank} with WORLD_SIZE={world}: a rank must be in 0..WORLD_SIZE-1")
    if local > rank:
        raise LaunchError(f"LOCAL_RANK={local} greater than RANK={rank}: the variables describe no job")
    return {"rank": rank, "world_size": world, "local_rank": local}


def check_launch_args(args) -> None:
    """--num-gpus >= 1, --num-machines >= 1, 0 <= --machine-rank < --num-machines, a usable --dist-url (more than one
    machine needs an explicit one), and a consistent torchrun/SLURM environment."""
    if args.num_gpus < 1:
        raise LaunchError(
            f"--num-gpus {args.num_gpus}: the number of processes per machine must be >= 1 (with MODEL.DEVICE cpu, "
            "CPU processes)"
        )
    if args.num_machines < 1:
        raise LaunchError(f"--num-machines {args.num_machines}: must be >= 1")
    if not 0 <= args.machine_rank < args.num_machines:
        raise LaunchError(
            f"--machine-rank {args.machine_rank} with --num-machines {args.num_machines}: machine ranks are "
            f"0..{args.num_machines - 1} (machine 0 hosts --dist-url)"
        )
    if args.num_machines > 1 and args.dist_url == "auto":
        raise LaunchError(
            f"--num-machines {args.num_machines} needs --dist-url tcp://<host of machine 0>:<port> (auto finds a port "
            "on one machine only)"
        )
    check_dist_url(args.dist_url, args.num_machines)
    check_rank_environment()
