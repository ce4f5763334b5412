"""Start one process per device and join machines with torch.distributed.

    launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url="auto", args=())

NCCL on CUDA, gloo on CPU (then `num_gpus_per_machine` is the number of CPU processes). When the
environment already says where this process belongs (torchrun: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), nothing is spawned: the process group is joined via env://.
"""
import logging
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detgn.utils import comm

__all__ = ["launch", "find_free_port", "started_by_torchrun"]

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)


def find_free_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def started_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")) and "MASTER_ADDR" in os.environ


def _backend(use_cuda: bool) -> str:
    return "nccl" if use_cuda else "gloo"


def launch(main_func, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0, dist_url: str = "auto",
           args=(), timeout=DEFAULT_TIMEOUT, use_cuda: bool = None):
    """Run main_func(*args) in every process of the job (just once when the job has one process)."""
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    if started_by_torchrun():
        local_rank = int(os.environ["LOCAL_RANK"])
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=_backend(use_cuda), init_method="env://", timeout=timeout)
        comm.set_local_rank(local_rank)
        try:
            result = main_func(*args)
            comm.synchronize()  # no rank tears the group down while another still talks (gloo aborts otherwise)
            return result
        finally:
            dist.destroy_process_group()
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url=auto only works on one machine; pass --dist-url tcp://<host of machine 0>:<port>")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// init method needs a file system shared by all machines")
    if use_cuda and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} CUDA devices are visible")
    mp.start_processes(_worker, nprocs=num_gpus_per_machine,
                       args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout, use_cuda),
                       daemon=False, start_method="spawn")


def _worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout, use_cuda):
    global_rank = machine_rank * num_per_machine + local_rank
    if use_cuda:
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend=_backend(use_cuda), init_method=dist_url, world_size=world_size, rank=global_rank,
                                timeout=timeout)
    except Exception as e:
        logger.error("Process group URL: %s", dist_url)
        raise RuntimeError(f"Could not join the process group at {dist_url}: {e}") from e
    comm.set_local_rank(local_rank)
    comm.synchronize()
    try:
        main_func(*args)
        comm.synchronize()  # no rank tears the group down while another still talks (gloo aborts otherwise)
    finally:
        dist.destroy_process_group()
