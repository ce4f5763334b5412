"""How an optimizer step's images are laid out: SOLVER.IMS_PER_BATCH over the processes, and each
process's share over micro-batches of SOLVER.IMS_PER_DEVICE images (engine/accumulation.py)."""

from typing import List, Sequence

from detgn.utils.errors import ConfigValueError

__all__ = ["micro_batches"]


def _divisors(n: int) -> List[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _fmt(values: Sequence[int], limit: int = 8) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def micro_batches(ims_per_batch: int, ims_per_device: int, world_size: int) -> int:
    """The number k of micro-batches per optimizer step on each process.

    Args:
        ims_per_batch: SOLVER.IMS_PER_BATCH, images per optimizer step over all processes.
        ims_per_device: SOLVER.IMS_PER_DEVICE, images per forward/backward on one process (0: all of the
            process's share, k = 1).
        world_size: number of training processes.
    Raises ConfigValueError (one line, with the values that would divide) when the sizes do not divide.
    """
    world_size = max(int(world_size), 1)
    if ims_per_batch % world_size:
        multiples = [world_size * i for i in range(1, 5)]
        raise ConfigValueError(
            f"SOLVER.IMS_PER_BATCH = {ims_per_batch}: must be divisible by the number of processes ({world_size}); "
            f"use a multiple of {world_size} (e.g. {_fmt(multiples)}) or another --num-gpus"
        )
    share = ims_per_batch // world_size
    if ims_per_device == 0:
        return 1
    if share % ims_per_device:
        raise ConfigValueError(
            f"SOLVER.IMS_PER_DEVICE = {ims_per_device}: must divide the {share} images of each of the {world_size} "
            f"process(es) per step (SOLVER.IMS_PER_BATCH {ims_per_batch} / {world_size}); use one of "
            f"{_fmt(_divisors(share))}"
        )
    return share // ims_per_device
