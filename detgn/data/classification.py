"""Image classification data for tools/train_classifier.py: ImageFolder-layout datasets
(`root/<class name>/<image>`, read by `torchvision.datasets.ImageFolder`), torchvision transforms,
and loaders with detection's guarantees: the training stream is a pure function of the seed (exact
resume at any iteration, same samples and augmentations whatever the number of processes), and
evaluation shards the images across ranks without duplicates.

Training: RandomResizedCrop(CLASSIFIER.TRAIN_CROP, scale=(MIN_CROP_SCALE, 1)) + horizontal flip.
Evaluation: resize the short side to TEST_RESIZE, center crop TEST_CROP. Images become (3, H, W)
uint8 tensors in INPUT.FORMAT channel order; the model normalises them (PIXEL_MEAN / PIXEL_STD).
"""

import logging
import os
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.utils.data as torchdata

from detgn.config import configurable
from detgn.utils import comm
from detgn.utils.errors import ConfigValueError

from .build import MappedDataset, _SkipBatches, _trivial_batch_collator, _worker_init
from .errors import DatasetFormatError, DatasetNotFoundError
from .detection_utils import ImageReadError
from .samplers import GroupedBatchSampler, InferenceSampler, TrainingSampler

__all__ = [
    "load_image_folder",
    "ClassificationMapper",
    "build_classification_train_loader",
    "build_classification_test_loader",
]

logger = logging.getLogger(__name__)


def load_image_folder(root: str, what: str = "CLASSIFIER.TRAIN_DIR") -> Dict:
    """-> {"records": [{"file_name", "label"}], "classes": [names]} of an ImageFolder root; one-line errors
    for a missing root, a root without class folders, or class folders without images."""
    from torchvision.datasets import ImageFolder

    if not root:
        raise ConfigValueError(f"{what} is empty; set it to an ImageFolder root (one sub-folder of images per class)")
    if not os.path.isdir(root):
        raise DatasetNotFoundError(
            f"{what} {root} is not a folder; point it at an ImageFolder root (one sub-folder of images per class)"
        )
    try:
        folder = ImageFolder(root, loader=lambda path: path)  # listing only; images are read by the mapper
    except FileNotFoundError as e:  # no class folder, or a class folder without a readable image extension
        raise DatasetFormatError(f"{what} {root}: {e}") from e
    records = [{"file_name": path, "label": int(label)} for path, label in folder.samples]
    return {"records": records, "classes": list(folder.classes)}


class ClassificationMapper:
    """record {"file_name", "label"} -> {"image": (3, H, W) uint8 tensor in INPUT.FORMAT, "label": int}.

    With a `rng` (numpy RandomState, given per sample by the training loader) the torchvision random
    transforms draw from a torch generator seeded from it, so a sample's augmentation depends only on
    its seed; without one (evaluation) the transforms are deterministic.
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool,
        image_format: str = "BGR",
        train_crop: int = 224,
        min_crop_scale: float = 0.08,
        test_resize: int = 256,
        test_crop: int = 224,
    ):
        """image_format: "BGR" or "RGB" (INPUT.FORMAT); train_crop, test_resize, test_crop in pixels (sides);
        min_crop_scale: the smallest crop area of RandomResizedCrop as a fraction of the image, in (0, 1]."""
        from torchvision import transforms as T

        if image_format not in ("BGR", "RGB"):
            raise ConfigValueError(f"INPUT.FORMAT must be BGR or RGB, got '{image_format}'")
        if not 0 < min_crop_scale <= 1:
            raise ConfigValueError(f"CLASSIFIER.MIN_CROP_SCALE must be in (0, 1], got {min_crop_scale}")
        if is_train:
            self.transform = T.Compose(
                [
                    T.RandomResizedCrop(train_crop, scale=(min_crop_scale, 1.0), antialias=True),
                    T.RandomHorizontalFlip(),
                ]
            )
        else:
            if test_crop > test_resize:
                raise ConfigValueError(
                    f"CLASSIFIER.TEST_CROP {test_crop} is larger than CLASSIFIER.TEST_RESIZE {test_resize}"
                )
            self.transform = T.Compose([T.Resize(test_resize, antialias=True), T.CenterCrop(test_crop)])
        self.bgr = image_format == "BGR"
        self.is_train = is_train

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        c = cfg.CLASSIFIER
        return {
            "is_train": is_train,
            "image_format": cfg.INPUT.FORMAT,
            "train_crop": c.TRAIN_CROP,
            "min_crop_scale": c.MIN_CROP_SCALE,
            "test_resize": c.TEST_RESIZE,
            "test_crop": c.TEST_CROP,
        }

    def __call__(self, record: Dict, rng: Optional[np.random.RandomState] = None) -> Dict:
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms.functional import pil_to_tensor

        try:
            with Image.open(record["file_name"]) as f:
                image = pil_to_tensor(f.convert("RGB"))  # (3, H, W) uint8 RGB
        except (OSError, UnidentifiedImageError) as e:
            raise ImageReadError(f"Cannot read image {record['file_name']} ({e})") from e
        if rng is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.randint(2**31)))
                image = self.transform(image)
        else:
            image = self.transform(image)
        if self.bgr:
            image = image.flip(0)
        return {"image": image.contiguous(), "label": record["label"], "file_name": record["file_name"]}


def build_classification_train_loader(cfg, records: List[Dict], *, start_iter: int = 0, seed: int = 0):
    """Infinite loader of lists of IMS_PER_BATCH / world_size mapped records; `start_iter` skips that many
    batches of the deterministic stream (exact resume)."""
    world = comm.get_world_size()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % world != 0:
        raise ConfigValueError(f"SOLVER.IMS_PER_BATCH ({total}) must be divisible by the number of processes ({world})")
    sampler = TrainingSampler(len(records), shuffle=True, seed=seed)
    batches = _SkipBatches(
        GroupedBatchSampler(
            sampler, [0] * len(records), total // world, seed=seed, rank=comm.get_rank(), world_size=world
        ),
        start_iter,
    )
    return torchdata.DataLoader(
        MappedDataset(records, ClassificationMapper(cfg, True), skip_bad=True),
        batch_sampler=batches,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=_trivial_batch_collator,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(seed),
    )


def build_classification_test_loader(cfg, records: List[Dict], batch_size: int = 16):
    """This rank's contiguous shard of `records` (InferenceSampler), in batches; unreadable images raise."""
    sampler = InferenceSampler(len(records))
    return torchdata.DataLoader(
        MappedDataset(records, ClassificationMapper(cfg, False), skip_bad=False),
        batch_sampler=torchdata.BatchSampler(sampler, batch_size, drop_last=False),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=_trivial_batch_collator,
    )
