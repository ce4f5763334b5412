"""Helpers around torch.distributed (rank, world size, gather, barriers)."""

import functools
import time
from typing import Any, List

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "get_world_size",
    "get_rank",
    "get_local_rank",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather",
    "shared_random_seed",
    "reduce_dict",
    "max_over_ranks",
    "PeerLostError",
    "is_peer_loss",
    "peer_loss_error",
    "unwrap_model",
]

_LOCAL_RANK = 0


def _ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel (or DataParallel); any other model as it is."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model


def get_world_size() -> int:
    return dist.get_world_size() if _ready() else 1


def get_rank() -> int:
    return dist.get_rank() if _ready() else 0


def get_local_rank() -> int:
    return _LOCAL_RANK if _ready() else 0


def set_local_rank(rank: int) -> None:
    global _LOCAL_RANK
    _LOCAL_RANK = rank


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes (no-op when not distributed)."""
    if not _ready() or dist.get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL:
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@functools.lru_cache()
def _gloo_group():
    """A gloo group for gathering Python objects, whatever the main backend."""
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data: Any) -> List[Any]:
    """Gather a picklable object from every rank; returns the list on every rank."""
    if get_world_size() == 1:
        return [data]
    out = [None] * get_world_size()
    dist.all_gather_object(out, data, group=_gloo_group())
    return out


def gather(data: Any, dst: int = 0) -> List[Any]:
    """Gather a picklable object to `dst`; other ranks get []."""
    if get_world_size() == 1:
        return [data]
    group = _gloo_group()
    if get_rank() == dst:
        out = [None] * get_world_size()
        dist.gather_object(data, out, dst=dst, group=group)
        return out
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def gather_list(items: List[Any], dst: int = 0, chunk: int = 256) -> List[Any]:
    """Concatenate every rank's `items` on `dst` (rank order, as chaining gather()'s lists), sent `chunk`
    items per message: the transient pickled buffers stay one chunk per rank, not every rank's whole list
    at once. Other ranks get []. Every rank must call it."""
    if get_world_size() == 1:
        return list(items)
    rounds = max(all_gather(-(-len(items) // chunk)))
    per_rank: List[List[Any]] = [[] for _ in range(get_world_size())]
    for r in range(rounds):
        parts = gather(items[r * chunk : (r + 1) * chunk], dst=dst)
        for rank, part in enumerate(parts):
            per_rank[rank].extend(part)
    return [x for part in per_rank for x in part] if get_rank() == dst else []


def shared_random_seed() -> int:
    """A random int that is the same on every rank (drawn on rank 0)."""
    ints = np.random.randint(2**31)
    return all_gather(ints)[0]


def reduce_dict(input_dict: dict, average: bool = True) -> dict:
    """Average (or sum) a dict of scalar tensors over ranks; the result on every rank."""
    world = get_world_size()
    if world < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict.keys())
        values = torch.stack([input_dict[k].detach().float() for k in names])
        dist.all_reduce(values)
        if average:
            values /= world
        return dict(zip(names, values))


def max_over_ranks(value: int) -> int:
    """The largest of every rank's `value`, on every rank (a one-int all-reduce on the CPU gloo group, so it
    never waits for a GPU stream). Every rank must call it."""
    if get_world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_gloo_group())
    return int(t.item())


class PeerLostError(RuntimeError):
    """A collective failed because another process of the job stopped (or its machine became unreachable)."""


# what gloo and NCCL say when the other end of a collective is gone
_PEER_LOSS = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "Connection refused",
    "Socket Timeout",
    "NCCL communicator was aborted",
    "Watchdog caught collective operation timeout",
    "remote process exited",
)


def is_peer_loss(e: BaseException) -> bool:
    """Whether `e`, raised by a collective, means that another process of the job is gone."""
    return isinstance(e, RuntimeError) and not isinstance(e, PeerLostError) and any(m in str(e) for m in _PEER_LOSS)


def unresponsive_ranks(wait_s: float = 5.0):
    """After a failed collective, every surviving process checks in through the rendezvous store; the ranks that
    have not within `wait_s` seconds are returned (sorted). None when the store itself cannot be reached (its
    host, global rank 0's process or torchrun's agent, is gone)."""
    try:
        store = dist.distributed_c10d._get_default_store()
        rank, world = get_rank(), get_world_size()
        store.set(f"detgn/alive/{rank}", "1")
        deadline = time.monotonic() + wait_s
        while True:
            present = {r for r in range(world) if store.check([f"detgn/alive/{r}"])}
            if len(present) == world or time.monotonic() > deadline:
                return sorted(set(range(world)) - present)
            time.sleep(0.1)
    except Exception:  # noqa: BLE001 - any failure to reach the store means its host is gone
        return None


def peer_loss_error(e: BaseException, where: str = "") -> PeerLostError:
    """A PeerLostError naming the ranks that stopped (as far as the store can tell) for the collective error `e`."""
    missing = unresponsive_ranks()
    if missing is None:
        who = "the process hosting the rendezvous store (global rank 0, or torchrun's agent on its machine) is gone"
    elif missing:
        who = f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {get_world_size()} stopped or became unreachable"
    else:
        who = "every rank still answers through the store, so a network link between them failed"
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return PeerLostError(
        f"rank {get_rank()} lost contact with the other processes{where}: {who} ({first[:160]}); see the "
        "log of the process named, and restart the job (it resumes from its last checkpoint)"
    )
