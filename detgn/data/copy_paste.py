"""Copy-paste augmentation (Ghiasi et al., "Simple Copy-Paste is a Strong Data Augmentation Method for Instance
Segmentation", CVPR 2021), as mmdetection's `CopyPaste` and torchvision's reference `SimpleCopyPaste` do it.

After a training image (the target) has been mapped with its own augmentations, another training image (the source)
is mapped with its own, independently drawn ones (so with large-scale jitter both are rescaled separately, as the
paper does), and a random subset of the source's instances is pasted onto the target with their masks:

- the subset: k ~ uniform{0 .. min(n, INPUT.COPY_PASTE.MAX_OBJECTS)} of the source's n instances, drawn without
  replacement (mmdetection's selection); k = 0 leaves the target as it was;
- pixels: where any pasted mask is set, the target image takes the source's pixels; the source is aligned at the
  top-left corner and cut or left short where the two sizes differ (with LSJ both are IMAGE_SIZE squares);
- the target's instances lose the pasted pixels from their masks; an instance with fewer than
  INPUT.COPY_PASTE.MIN_VISIBLE_AREA pixels left is dropped (1: only those covered completely), and every box is the
  tight box of its mask (the kept target instances' and the pasted ones');
- the pasted instances come after the target's, with their classes; masks become BitMasks.

Deterministic per sample: the loader's per-sample random stream (MappedDataset) decides everything (the target is
mapped first, exactly as without copy-paste; the paste's own stream is drawn from it after), so resumed runs and
other world sizes see the same samples.
Records come from the same dataset object (the record store's random access: no copy of the dataset per worker).
"""

import logging
from typing import Optional

import numpy as np
import torch

from detgn.config.components import config_function
from detgn.config.config import CfgNode as CN
from detgn.config.rules import between, ge
from detgn.structures import BitMasks, Instances, PolygonMasks

from .detection_utils import ImageReadError, SizeMismatchError

__all__ = ["add_copy_paste_config", "CopyPasteMapper", "copy_paste", "bit_masks"]

logger = logging.getLogger(__name__)

_DEFAULTS = {"PROB": 1.0, "MAX_OBJECTS": 100, "MIN_VISIBLE_AREA": 1}


def _needs_masks(c):
    """Copy-paste pastes masks: it needs the mask head's data, and Panoptic FPN's semantic labels are not pasted."""
    cp = c.INPUT.COPY_PASTE
    if not cp.ENABLED:
        for key, default in _DEFAULTS.items():
            if cp[key] != default:
                return (f"INPUT.COPY_PASTE.{key}", cp[key], f"its default {default} unless INPUT.COPY_PASTE.ENABLED")
        return None
    if not c.MODEL.MASK_ON:
        return ("INPUT.COPY_PASTE.ENABLED", True, "False without MODEL.MASK_ON (it pastes instance masks)")
    if c.MODEL.META_ARCHITECTURE == "PanopticFPN":
        return ("INPUT.COPY_PASTE.ENABLED", True, "False with PanopticFPN (the semantic labels are not pasted)")
    return None


@config_function(
    rules={
        "INPUT.COPY_PASTE.PROB": between(0.0, 1.0),
        "INPUT.COPY_PASTE.MAX_OBJECTS": ge(1),
        "INPUT.COPY_PASTE.MIN_VISIBLE_AREA": ge(1),
    },
    relations=[("copy-paste needs instance masks, not with Panoptic FPN", _needs_masks)],
)
def add_copy_paste_config(cfg) -> None:
    """INPUT.COPY_PASTE.* (module docstring)."""
    c = cfg.INPUT.COPY_PASTE = CN()
    c.ENABLED = False  # paste instances of another training image onto each training image
    c.PROB = 1.0  # chance that an image gets a paste
    c.MAX_OBJECTS = 100  # at most this many source instances pasted (a random number up to it)
    c.MIN_VISIBLE_AREA = 1  # a covered instance with fewer visible pixels is dropped (1: fully covered only)


def bit_masks(instances: Instances, size) -> torch.Tensor:
    """(N, H, W) bool masks of instances' gt_masks (PolygonMasks rasterised) at `size` (h, w)."""
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, *size)
    return masks.tensor.bool()


def _fit(tensor: torch.Tensor, h: int, w: int, fill=0) -> torch.Tensor:
    """The top-left (h, w) of the last two dimensions, padded with `fill` where the tensor is smaller."""
    out = torch.full((*tensor.shape[:-2], h, w), fill, dtype=tensor.dtype)
    hh, ww = min(h, tensor.shape[-2]), min(w, tensor.shape[-1])
    out[..., :hh, :ww] = tensor[..., :hh, :ww]
    return out


def copy_paste(target: dict, source: dict, selected, min_visible_area: int = 1) -> dict:
    """`target` (a mapped training dict: "image" (C, H, W) uint8, "instances" with gt_boxes, gt_classes, gt_masks)
    with source["instances"][selected] pasted on it (module docstring). Returns a new dict; the inputs are left."""
    image = target["image"]
    h, w = image.shape[-2:]
    src_inst = source["instances"]
    chosen = torch.as_tensor(np.asarray(selected, dtype=np.int64))
    if len(chosen) == 0 or len(src_inst) == 0:
        return target
    src_masks = _fit(bit_masks(src_inst, source["image"].shape[-2:])[chosen], h, w, False)
    visible_src = src_masks.flatten(1).any(dim=1)
    src_masks = src_masks[visible_src]
    if len(src_masks) == 0:
        return target
    covered = src_masks.any(dim=0)
    src_image = _fit(source["image"], h, w)
    out = dict(target)
    out["image"] = torch.where(covered, src_image, image)

    tgt = target["instances"]
    tgt_masks = bit_masks(tgt, (h, w)) & ~covered if len(tgt) else torch.zeros(0, h, w, dtype=torch.bool)
    keep = tgt_masks.flatten(1).sum(dim=1) >= min_visible_area
    kept = Instances((h, w), gt_classes=tgt.gt_classes[keep], gt_masks=BitMasks(tgt_masks[keep]))
    pasted = Instances((h, w), gt_classes=src_inst.gt_classes[chosen][visible_src], gt_masks=BitMasks(src_masks))
    merged = Instances.cat([kept, pasted]) if len(kept) else pasted
    merged.gt_boxes = merged.gt_masks.get_bounding_boxes()
    out["instances"] = merged
    return out


class CopyPasteMapper:
    """Wraps the training DatasetMapper: mapper(record, rng), then a paste from dicts[random index] (module
    docstring). `dicts` is the training dataset the loader samples (a list or the record store)."""

    def __init__(self, mapper, dicts, *, prob: float = 1.0, max_objects: int = 100, min_visible_area: int = 1):
        self.mapper, self.dicts = mapper, dicts
        self.prob, self.max_objects, self.min_visible_area = float(prob), int(max_objects), int(min_visible_area)

    def __call__(self, record: dict, rng: Optional[np.random.RandomState] = None) -> dict:
        if rng is None:
            rng = np.random.RandomState(np.random.randint(2**31))
        target = self.mapper(record, rng)  # the same sample as without copy-paste
        paste_rng = np.random.RandomState(rng.randint(2**31))  # then the paste's own stream, from the same one
        if paste_rng.rand() >= self.prob:
            return target
        index = int(paste_rng.randint(len(self.dicts)))
        source_rng = np.random.RandomState(paste_rng.randint(2**31))
        try:
            source = self.mapper(self.dicts[index], source_rng)
        except (ImageReadError, SizeMismatchError) as e:  # the target stays usable; the loader reports bad images
            logger.warning("Copy-paste: source image %s skipped (%s)", self.dicts[index].get("file_name"), e)
            return target
        n = len(source["instances"])
        k = int(paste_rng.randint(0, min(n, self.max_objects) + 1)) if n else 0
        selected = np.sort(paste_rng.choice(n, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
        return copy_paste(target, source, selected, self.min_visible_area)
