"""DatasetMapper: one dataset dict -> the model's input dict (image tensor + Instances)."""

import copy
from typing import Dict, List, Optional

import numpy as np
import torch

from detgn.config import configurable
from detgn.structures import BoxMode

from . import detection_utils as utils
from .transforms import AugInput, Augmentation, build_augmentation

__all__ = ["DatasetMapper"]


class DatasetMapper:
    """Reads the image (INPUT.FORMAT), applies augmentations to image, boxes and masks together,
    and returns {"image": (C, H, W) uint8, "instances": Instances(gt_boxes, gt_classes, gt_masks),
    "height", "width", "file_name", "image_id"}. Crowd annotations are dropped (ignored) and
    instances whose box became empty (e.g. cropped away) are removed. A record with "sem_seg_file_name" (panoptic
    data) also gives, in training, "sem_seg": (H, W) long labels read from that PNG and transformed with the image
    (nearest neighbour; padding takes `sem_seg_ignore_value`); at inference the path stays for the evaluator."""

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[Augmentation],
        image_format: str = "BGR",
        use_instance_mask: bool = False,
        instance_mask_format: str = "polygon",
        sem_seg_ignore_value: int = 255,
        recompute_boxes: bool = False,
    ):
        """recompute_boxes: after the augmentations, each box is its mask's tight box (detectron2's, for crops and
        large-scale jitter, where a cut mask's old box would overhang what is left of the object)."""
        self.is_train = is_train
        self.augmentations = list(augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.sem_seg_ignore_value = sem_seg_ignore_value
        self.recompute_boxes = bool(recompute_boxes) and use_instance_mask

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return dict(
            is_train=is_train,
            augmentations=build_augmentation(cfg, is_train),
            image_format=cfg.INPUT.FORMAT,
            use_instance_mask=cfg.MODEL.MASK_ON,
            instance_mask_format=cfg.INPUT.MASK_FORMAT,
            sem_seg_ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            recompute_boxes=cfg.MODEL.MASK_ON and (cfg.INPUT.CROP.ENABLED or cfg.INPUT.LSJ.ENABLED),
        )

    def __call__(self, dataset_dict: Dict, rng: Optional[np.random.RandomState] = None) -> Dict:
        """`rng` drives the augmentations (the training loader passes a per-sample seeded one)."""
        dataset_dict = copy.deepcopy(dataset_dict)
        if rng is None:
            rng = np.random.RandomState(np.random.randint(2**31))
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        # in training the augmentations may look at the boxes (XYXY pixels) of the objects a crop should keep
        aug_input = AugInput(image, boxes=_xyxy_boxes(dataset_dict) if self.is_train else None)
        transforms = aug_input.apply_augmentations(self.augmentations, rng)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("segments_info", None)
            return dataset_dict
        dataset_dict.pop("segments_info", None)
        dataset_dict.pop("pan_seg_file_name", None)
        sem_seg_file = dataset_dict.pop("sem_seg_file_name", None)
        if sem_seg_file is not None:
            sem_seg = utils.read_sem_seg(sem_seg_file, dataset_dict)
            sem_seg = utils.transform_sem_seg(transforms, sem_seg, self.sem_seg_ignore_value)
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg.astype(np.int64))
        annos = [
            utils.transform_instance_annotations(a, transforms, image_shape)
            for a in dataset_dict.pop("annotations", [])
            if a.get("iscrowd", 0) == 0
        ]
        if not self.use_instance_mask:
            for a in annos:
                a.pop("segmentation", None)
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=self.instance_mask_format)
        if self.recompute_boxes and instances.has("gt_masks"):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = instances[instances.gt_boxes.nonempty()]
        return dataset_dict


def _xyxy_boxes(dataset_dict: Dict) -> np.ndarray:
    """(N, 4) float64 XYXY pixel boxes of the record's non-crowd annotations (those the mapper keeps)."""
    boxes = [
        BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
        for a in dataset_dict.get("annotations", [])
        if a.get("iscrowd", 0) == 0
    ]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
