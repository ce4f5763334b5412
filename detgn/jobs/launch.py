"""Start one process per device and join machines with torch.distributed.

    launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url="auto", args=())

NCCL on CUDA, gloo on CPU (then `num_gpus_per_machine` is the number of CPU processes). When the
environment already says where this process belongs (torchrun: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), nothing is spawned: the process group is joined via env://.
"""

import gc
import logging
import os
import signal
import socket
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detgn.utils import comm
from detgn.utils.errors import UserInputError

from detgn.utils.interrupt import CHECKPOINT_SIGNALS, TrainingPreempted

__all__ = ["launch", "find_free_port", "started_by_torchrun", "JoinError", "WorkerStoppedError", "WorkerKilledError"]

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)
INTERRUPTED_EXIT = 130  # exit status of a process stopped by Ctrl-C
PEER_LOST_EXIT = 4  # exit status of a process whose collective failed because another process stopped


class JoinError(UserInputError, RuntimeError):
    """A process could not join the process group within the timeout (another machine missing or unreachable)."""


class WorkerKilledError(RuntimeError):
    """A spawned process was killed by a signal (SIGKILL from the out-of-memory killer, say)."""


class WorkerStoppedError(UserInputError, RuntimeError):
    """A spawned process stopped on a user error it printed."""


def find_free_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def started_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")) and "MASTER_ADDR" in os.environ


def _warn_about_shared_store_restarts() -> None:
    """torchrun --max-restarts on several nodes with the agents' shared rendezvous store (torch's default): a
    restarted group can read the previous round's addresses and fail or hang while joining, because the
    agents' restart counts that keep the rounds apart differ from node to node (pytorch/pytorch#135712)."""
    try:
        restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    except ValueError:
        restarts = 0
    if restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and os.environ.get("RANK") == "0":
        logger.warning(
            "torchrun --max-restarts %d with the shared rendezvous store: a restart on several machines can join "
            "stale addresses and fail (pytorch/pytorch#135712); export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 before "
            "torchrun on every machine",
            restarts,
        )


def _join_error(e: Exception, who: str, where: str, started: float, timeout: timedelta) -> JoinError:
    """What went wrong while joining, in one line: a port already taken, an early failure with its cause, or the
    other processes that never came within the timeout."""
    import time

    first = (str(e).splitlines() or [type(e).__name__])[0][:200]
    elapsed = time.monotonic() - started
    text = str(e).lower()
    if "address already in use" in text or "eaddrinuse" in text:
        return JoinError(
            f"{who} could not open {where}: the port is already in use on this machine (another job or program holds "
            "it); choose a free port in --dist-url (or MASTER_PORT), or --dist-url auto on one machine"
        )
    if elapsed < 0.9 * timeout.total_seconds():
        return JoinError(
            f"{who} could not join the process group at {where}: it failed after {elapsed:.0f} s ({first}); check the "
            "address and port (--dist-url / MASTER_ADDR, MASTER_PORT) and that this machine can reach it"
        )
    return JoinError(
        f"{who} could not join the process group at {where} within {timeout.total_seconds():.0f} s ({first}): the "
        "other machine(s) did not start or cannot reach that address; check --dist-url, --machine-rank and "
        "--num-machines on every machine, or wait longer with --dist-timeout"
    )


def _backend(use_cuda: bool) -> str:
    """nccl on CUDA, with asynchronous error handling on (unless the user set it): a collective that fails, or
    waits longer than --dist-timeout for a process that is gone, aborts this process instead of hanging it."""
    if use_cuda:
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        return "nccl"
    return "gloo"


def _run_in_group(main_func, args):
    """main_func(*args) in the joined process group, which is destroyed afterwards; a collective that failed because
    another process stopped becomes comm.PeerLostError."""
    try:
        result = main_func(*args)
        comm.synchronize()  # no rank tears the group down while another still talks (gloo aborts otherwise)
        return result
    except RuntimeError as e:
        if comm.is_peer_loss(e):
            raise comm.peer_loss_error(e) from None
        raise
    finally:
        # what main_func left behind (a DDP model, its reducer and comm hooks) goes before the group it uses: torn
        # down after it, at interpreter exit, it has aborted a process ("terminate called without an active
        # exception", SIGABRT)
        gc.collect()
        dist.destroy_process_group()


def launch(
    main_func,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args=(),
    timeout=DEFAULT_TIMEOUT,
    use_cuda: bool = None,
):
    """Run main_func(*args) in every process of the job (just once when the job has one process)."""
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    if started_by_torchrun():
        _warn_about_shared_store_restarts()
        local_rank = int(os.environ["LOCAL_RANK"])
        if use_cuda:
            torch.cuda.set_device(local_rank)
        started = time.monotonic()
        try:
            dist.init_process_group(backend=_backend(use_cuda), init_method="env://", timeout=timeout)
        except Exception as e:
            raise _join_error(
                e,
                f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}",
                f"{os.environ['MASTER_ADDR']}:{os.environ.get('MASTER_PORT')}",
                started,
                timeout,
            ) from None
        comm.set_local_rank(local_rank)
        return _run_in_group(main_func, args)
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError(
                "dist_url=auto only works on one machine; pass --dist-url tcp://<host of machine 0>:<port>"
            )
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// init method needs a file system shared by all machines")
    if use_cuda and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} CUDA devices are visible"
        )
    try:
        context = mp.start_processes(
            _worker,
            nprocs=num_gpus_per_machine,
            args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout, use_cuda),
            daemon=False,
            start_method="spawn",
            join=False,
        )
        with _forward_signals(context.processes):
            while not context.join():
                pass
    except mp.ProcessExitedException as e:
        if e.exit_code == 2:  # a process printed a user error (one line, above) and stopped
            raise WorkerStoppedError(
                f"process {machine_rank * num_gpus_per_machine + e.error_index} of {world_size} stopped on the "
                "error above; the others were stopped"
            ) from None
        if e.exit_code == PEER_LOST_EXIT:  # it printed which rank it lost contact with
            raise comm.PeerLostError(
                f"process {machine_rank * num_gpus_per_machine + e.error_index} of {world_size} lost contact "
                "with the others (above); the others on this machine were stopped."
            ) from None
        if e.exit_code == INTERRUPTED_EXIT:
            raise KeyboardInterrupt from None
        if e.exit_code is not None and e.exit_code - 128 in CHECKPOINT_SIGNALS:  # all stopped after saving a checkpoint
            raise TrainingPreempted(e.exit_code - 128) from None
        if e.signal_name:
            raise WorkerKilledError(
                f"process {machine_rank * num_gpus_per_machine + e.error_index} of {world_size} was killed by "
                f"{e.signal_name} (the kernel's out-of-memory killer, the scheduler or a user: see `dmesg` and "
                "the job's log); the others on this machine were stopped."
            ) from None
        raise


class _forward_signals:
    """While the spawned processes run, a checkpoint signal sent to this (parent) process only, as `kill <pid>`
    does, is passed on to them, so they save and stop (utils/interrupt.py) instead of being orphaned."""

    def __init__(self, processes):
        self._processes = processes
        self._saved = {}

    def _handler(self, signum, frame):
        for p in self._processes:
            if p.is_alive():
                try:
                    os.kill(p.pid, signum)
                except ProcessLookupError:
                    pass

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._saved = {s: signal.signal(s, self._handler) for s in CHECKPOINT_SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, h in self._saved.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout, use_cuda):
    global_rank = machine_rank * num_per_machine + local_rank
    if use_cuda:
        torch.cuda.set_device(local_rank)
    try:
        started = time.monotonic()
        try:
            dist.init_process_group(
                backend=_backend(use_cuda),
                init_method=dist_url,
                world_size=world_size,
                rank=global_rank,
                timeout=timeout,
            )
        except Exception as e:
            raise _join_error(e, f"rank {global_rank} of {world_size}", dist_url, started, timeout) from None
        comm.set_local_rank(local_rank)
        comm.synchronize()
        _run_in_group(main_func, args)
    except UserInputError as e:  # one line, as the single-process CLI prints it; the launcher reports the exit
        print(f"error (rank {global_rank}): {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except TrainingPreempted as e:  # every rank saved and stopped after the same iteration; the launcher reports it
        sys.exit(e.exit_status)
    except comm.PeerLostError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(PEER_LOST_EXIT)
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal: the launcher says it once
        sys.exit(INTERRUPTED_EXIT)
