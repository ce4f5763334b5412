"""Samplers: infinite shuffled training stream sharded over ranks, aspect-ratio grouped batches,
and an inference sampler that splits the dataset across ranks without duplicates.

Training batches are decided in the main process from the dataset's recorded sizes, so the
stream is a pure function of (seed, rank, world size) and resuming can skip to any iteration.
Each sample also gets its own augmentation seed.
"""

import itertools
import math
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from detgn.utils import comm

__all__ = [
    "TrainingSampler",
    "RepeatFactorTrainingSampler",
    "repeat_factors_from_category_frequency",
    "InferenceSampler",
    "GroupedBatchSampler",
]


class TrainingSampler:
    """Infinite stream of dataset indices: a fresh permutation per epoch (seeded), rank r of W
    takes positions r, r + W, r + 2W, ... of the global stream."""

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: Optional[int] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        self._size = size
        self._shuffle = shuffle
        self._seed = int(seed if seed is not None else comm.shared_random_seed())
        self._rank = comm.get_rank() if rank is None else rank
        self._world_size = comm.get_world_size() if world_size is None else world_size

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=g).tolist()
            else:
                yield from range(self._size)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)


def repeat_factors_from_category_frequency(dataset_dicts, repeat_thresh: float) -> torch.Tensor:
    """LVIS's repeat factors (Gupta et al., 2019): f_c = fraction of images that contain category c,
    r_c = max(1, sqrt(t / f_c)), and an image repeats r_i = max over its categories of r_c times per
    epoch (1 for an image without annotations). Returns (N,) float64."""
    per_image = [{a["category_id"] for a in d.get("annotations", ())} for d in dataset_dicts]
    counts = {}
    for cats in per_image:
        for c in cats:
            counts[c] = counts.get(c, 0) + 1
    n = len(per_image)
    r_cat = {c: max(1.0, math.sqrt(repeat_thresh / (k / n))) for c, k in counts.items()}
    return torch.tensor([max((r_cat[c] for c in cats), default=1.0) for cats in per_image], dtype=torch.float64)


class RepeatFactorTrainingSampler(TrainingSampler):
    """TrainingSampler where image i appears floor(r_i) or floor(r_i) + 1 times per epoch (stochastic
    rounding, so on average r_i times), the epoch then shuffled: rare categories are seen more. The
    stream is a pure function of the seed (rounding and order drawn from one seeded generator), so resuming
    skips to any iteration exactly, and ranks take positions r, r + W, ... of it."""

    def __init__(
        self,
        repeat_factors: torch.Tensor,
        shuffle: bool = True,
        seed: Optional[int] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        super().__init__(len(repeat_factors), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        factors = torch.as_tensor(repeat_factors, dtype=torch.float64)
        if not torch.isfinite(factors).all() or (factors < 0).any():
            raise ValueError("repeat factors must be finite and >= 0")
        self._int_part = torch.floor(factors)
        self._frac_part = factors - self._int_part

    def _epoch_indices(self, g: torch.Generator) -> torch.Tensor:
        reps = self._int_part + (torch.rand(len(self._frac_part), generator=g, dtype=torch.float64) < self._frac_part)
        return torch.repeat_interleave(torch.arange(len(reps)), reps.long())

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            idx = self._epoch_indices(g)
            if len(idx) == 0:
                raise ValueError("every repeat factor rounded to 0: nothing to sample")
            if self._shuffle:
                idx = idx[torch.randperm(len(idx), generator=g)]
            yield from idx.tolist()


class GroupedBatchSampler:
    """Groups a sampler's indices into batches of images with the same orientation (w > h or not).

    Yields lists of (dataset index, augmentation seed). The seed is a function of the sample's
    position in the global (all-rank) stream, so the same image at the same position gets the
    same augmentation whatever the number of processes.
    """

    def __init__(
        self, sampler, group_ids: Sequence[int], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        buckets = {}
        counter = 0
        for idx in self.sampler:
            g = int(self.group_ids[idx])
            bucket = buckets.setdefault(g, [])
            bucket.append((idx, self._sample_seed(self.rank + self.world_size * counter)))
            counter += 1
            if len(bucket) == self.batch_size:
                yield list(bucket)
                del bucket[:]

    def _sample_seed(self, position: int) -> int:
        return int(np.random.SeedSequence([self.seed, position]).generate_state(1)[0])


class InferenceSampler:
    """Contiguous shards of range(size): rank r gets [begin_r, end_r); shards cover every index once."""

    def __init__(self, size: int, rank: Optional[int] = None, world_size: Optional[int] = None):
        self._size = size
        rank = comm.get_rank() if rank is None else rank
        world_size = comm.get_world_size() if world_size is None else world_size
        shard = int(math.ceil(size / world_size)) if size else 0
        begin = min(shard * rank, size)
        end = min(shard * (rank + 1), size)
        self._local_indices = range(begin, end)

    def __iter__(self):
        yield from self._local_indices

    def __len__(self):
        return len(self._local_indices)
