"""Training and test data loaders.

Training: dataset dicts -> TrainingSampler (infinite, seeded, sharded) -> aspect-ratio grouped
batches of (index, augmentation seed) decided in the main process -> DataLoader workers run the
mapper. IMS_PER_BATCH is the total over all processes; with SOLVER.IMS_PER_DEVICE each process's share
comes as micro-batches, each the batch of one rank of a larger job (engine/accumulation.py).
"""

import itertools
import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.utils.data as torchdata

from detgn.config.batch import micro_batches
from detgn.utils import comm
from detgn.utils.errors import ConfigValueError

from .catalog import DatasetCatalog
from .errors import DatasetFormatError
from .copy_paste import CopyPasteMapper
from .dataset_mapper import DatasetMapper
from .detection_utils import ImageReadError, SizeMismatchError
from .record_store import RecordList
from .samplers import (
    GroupedBatchSampler,
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
    repeat_factors_from_category_frequency,
)

__all__ = [
    "get_detection_dataset_dicts",
    "build_detection_train_loader",
    "build_detection_test_loader",
    "MappedDataset",
]

logger = logging.getLogger(__name__)


def get_detection_dataset_dicts(names: Sequence[str], filter_empty: bool = True):
    """Concatenate registered datasets; optionally drop images with no (non-crowd) annotation.

    Returns a list of dicts, or a RecordList (a list-like view over memory-mapped record files, see
    record_store.py) when every dataset comes from the record cache; both index, iterate and len() alike.
    """
    if isinstance(names, str):
        names = [names]
    if len(names) == 0:
        raise ConfigValueError("No dataset given (DATASETS.TRAIN / DATASETS.TEST is empty)")
    parts = []
    for name in names:
        d = DatasetCatalog.get(name)
        if len(d) == 0:
            raise DatasetFormatError(f"Dataset '{name}' is empty (no image in its annotation file)")
        parts.append(d)
    if all(isinstance(p, RecordList) for p in parts):
        dicts = parts[0]
        for p in parts[1:]:
            dicts = dicts + p
        if filter_empty:
            before = len(dicts)
            dicts = dicts.select(dicts.num_instances > 0)
            if before != len(dicts):
                logger.info(
                    "Removed %d images with no usable annotations; %d images left", before - len(dicts), len(dicts)
                )
            if not len(dicts):
                raise ConfigValueError(
                    f"No image of {list(names)} has annotations; set DATALOADER.FILTER_EMPTY_ANNOTATIONS False"
                )
        return dicts
    dicts = []
    for d in parts:
        dicts.extend(d)
    if filter_empty and "annotations" in dicts[0]:
        before = len(dicts)
        dicts = [d for d in dicts if any(a.get("iscrowd", 0) == 0 for a in d.get("annotations", []))]
        if before != len(dicts):
            logger.info("Removed %d images with no usable annotations; %d images left", before - len(dicts), len(dicts))
        if not dicts:
            raise ConfigValueError(
                f"No image of {list(names)} has annotations; set DATALOADER.FILTER_EMPTY_ANNOTATIONS False"
            )
    return dicts


class MappedDataset(torchdata.Dataset):
    """dataset[(index, seed)] = mapper(dicts[index], RandomState(seed)).

    In training (`skip_bad=True`) an unreadable or mis-sized image is logged, counted and
    replaced by the next image, so one bad file never stops a long run.
    """

    def __init__(self, dicts: List[Dict], mapper, skip_bad: bool = True, max_retries: int = 20):
        self.dicts = dicts
        self.mapper = mapper
        self.skip_bad = skip_bad
        self.max_retries = max_retries
        self.num_skipped = 0

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, key):
        idx, seed = key if isinstance(key, tuple) else (key, None)
        for attempt in range(self.max_retries + 1):
            d = self.dicts[(idx + attempt) % len(self.dicts)]
            rng = np.random.RandomState(seed % (2**32)) if seed is not None else None
            try:
                return self.mapper(d, rng) if rng is not None else self.mapper(d)
            except (ImageReadError, SizeMismatchError) as e:
                if not self.skip_bad:
                    raise
                self.num_skipped += 1
                logging.getLogger("detgn.data").warning(
                    "Skipping image %s (%s); %d skipped so far in this worker", d.get("file_name"), e, self.num_skipped
                )
        raise ImageReadError(
            f"{self.max_retries + 1} images in a row could not be read (last: {d.get('file_name')}); check the dataset"
        )


class _SkipBatches:
    def __init__(self, batch_sampler, start_iter: int):
        self.batch_sampler, self.start_iter = batch_sampler, start_iter

    def __iter__(self):
        return itertools.islice(iter(self.batch_sampler), self.start_iter, None)


def _trivial_batch_collator(batch):
    return batch


def _worker_init(worker_id):
    seed = (torch.initial_seed() + worker_id) % 2**31
    np.random.seed(seed)


class _MicroBatches:
    """One step's batch: micro-batch j of this process is virtual rank `first_rank + j`'s batch of a job of
    `virtual_world` ranks, concatenated in j order (engine/accumulation.py)."""

    def __init__(self, samplers):
        self.samplers = samplers

    def __iter__(self):
        if len(self.samplers) == 1:
            yield from self.samplers[0]
            return
        for batches in zip(*self.samplers):
            yield [item for b in batches for item in b]


def build_detection_train_loader(
    cfg, mapper=None, *, start_iter: int = 0, seed: Optional[int] = None, dataset: Optional[List[Dict]] = None
):
    """Infinite loader yielding, per optimizer step, lists of IMS_PER_BATCH / world_size mapped dicts.

    With SOLVER.IMS_PER_DEVICE m > 0 (gradient accumulation, engine/accumulation.py) a step's list holds k
    micro-batches of m images, one after the other; micro-batch j of rank r is the batch that rank r * k + j
    of a job of world_size * k processes would get (the same images, the same augmentations).
    `start_iter` skips that many steps of the deterministic stream (exact resume);
    `seed` fixes the order and augmentations (default: cfg.SEED when >= 0).
    """
    world = comm.get_world_size()
    total = cfg.SOLVER.IMS_PER_BATCH
    k = micro_batches(total, cfg.SOLVER.IMS_PER_DEVICE, world)
    batch_size = total // (world * k)
    virtual_world = world * k
    if dataset is None:
        dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    if mapper is None:
        mapper = DatasetMapper(cfg, True)
        cp = cfg.INPUT.COPY_PASTE
        if cp.ENABLED:  # instances of another training image pasted on each (data/copy_paste.py)
            mapper = CopyPasteMapper(
                mapper, dataset, prob=cp.PROB, max_objects=cp.MAX_OBJECTS, min_visible_area=cp.MIN_VISIBLE_AREA
            )
    if seed is None:
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    name = cfg.DATALOADER.SAMPLER_TRAIN
    factors = None
    if name == "RepeatFactorTrainingSampler":
        factors = repeat_factors_from_category_frequency(dataset, cfg.DATALOADER.REPEAT_THRESHOLD)
        logger.info(
            "RepeatFactorTrainingSampler (REPEAT_THRESHOLD %g): %d images, %.0f samples per epoch",
            cfg.DATALOADER.REPEAT_THRESHOLD,
            len(factors),
            float(factors.sum()),
        )
    elif name != "TrainingSampler":
        raise ConfigValueError(
            f"DATALOADER.SAMPLER_TRAIN '{name}' is unknown; use TrainingSampler or RepeatFactorTrainingSampler"
        )
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING and isinstance(dataset, RecordList):
        group_ids = np.where(dataset.widths > dataset.heights, 0, 1).tolist()  # no record decoded
    elif cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        group_ids = [0 if d["width"] > d["height"] else 1 for d in dataset]
    else:
        group_ids = [0] * len(dataset)
    samplers = []
    for v in range(comm.get_rank() * k, (comm.get_rank() + 1) * k):
        if factors is None:
            sampler = TrainingSampler(len(dataset), shuffle=True, seed=seed, rank=v, world_size=virtual_world)
        else:
            sampler = RepeatFactorTrainingSampler(factors, shuffle=True, seed=seed, rank=v, world_size=virtual_world)
        samplers.append(
            GroupedBatchSampler(sampler, group_ids, batch_size, seed=seed, rank=v, world_size=virtual_world)
        )
    batches = _SkipBatches(_MicroBatches(samplers), start_iter)
    return torchdata.DataLoader(
        MappedDataset(dataset, mapper, skip_bad=True),
        batch_sampler=batches,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=_trivial_batch_collator,
        worker_init_fn=_worker_init,
        persistent_workers=False,
        pin_memory=pin_memory(cfg),
        generator=torch.Generator().manual_seed(seed),
    )  # never draws from the global RNG


def pin_memory(cfg) -> bool:
    """Page-locked batches when the model runs on CUDA: the images (the bulk of a batch) then go to the GPU
    asynchronously (GeneralizedRCNN moves them with non_blocking=True) instead of blocking the host."""
    return str(cfg.MODEL.DEVICE).startswith("cuda") and torch.cuda.is_available()


def build_detection_test_loader(cfg, dataset_name, mapper=None, num_workers: Optional[int] = None):
    """Batch size 1, each rank a contiguous shard (InferenceSampler); no filtering."""
    if isinstance(dataset_name, str):
        dataset_name = [dataset_name]
    dicts = get_detection_dataset_dicts(dataset_name, filter_empty=False)
    if mapper is None:
        mapper = DatasetMapper(cfg, False)
    dataset = MappedDataset(dicts, mapper, skip_bad=False)
    sampler = InferenceSampler(len(dataset))
    batch_sampler = torchdata.BatchSampler(sampler, 1, drop_last=False)
    return torchdata.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers,
        collate_fn=_trivial_batch_collator,
        pin_memory=pin_memory(cfg),
        generator=torch.Generator().manual_seed(0),
    )  # never draws from the global RNG
