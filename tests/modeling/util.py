"""Helpers shared by modeling tests: configs and synthetic inputs."""

import os

import torch

from detgn.config import get_cfg
from detgn.structures import BitMasks, Boxes, Instances

from tests.util import NARROW_MODEL, REPO

GN_CONFIG = os.path.join(REPO, "configs", "GN", "mask_rcnn_R_50_FPN_3x_gn.yaml")
KEYS_FILE = os.path.join(REPO, "tests", "data", "detectron2_parity", "keys.txt")  # detectron2 GN R50-FPN, 3 classes


def gn_cfg(num_classes=3):
    cfg = get_cfg()
    cfg.merge_from_file(GN_CONFIG)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    return cfg


def small_gn_cfg(num_classes=3):
    """gn_cfg() made narrow for fast tests: ResNet-18, 64-channel FPN and heads, 64 ROIs per image
    (still GN everywhere, the 4conv1fc box head and the 4-conv mask head)."""
    cfg = gn_cfg(num_classes)
    cfg.merge_from_list(NARROW_MODEL)
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    return cfg


def read_keys():
    out = []
    for line in open(KEYS_FILE):
        if line.startswith("#") or not line.strip():
            continue
        k, shape = line.rstrip("\n").split("\t")
        out.append((k, shape))
    return out


def make_inputs(height=128, width=160, with_gt=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
    inst = Instances((height, width))
    if with_gt:
        boxes = torch.tensor([[10.0, 12.0, 70.0, 90.0], [60.0, 40.0, 150.0, 120.0]])
        masks = torch.zeros(2, height, width, dtype=torch.bool)
        masks[0, 12:90, 10:70] = True
        masks[1, 40:120, 60:150] = True
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.tensor([0, 2])
        inst.gt_masks = BitMasks(masks)
    else:
        inst.gt_boxes = Boxes(torch.zeros(0, 4))
        inst.gt_classes = torch.zeros(0, dtype=torch.int64)
        inst.gt_masks = BitMasks(torch.zeros(0, height, width, dtype=torch.bool))
    return {"image": img, "instances": inst, "height": height, "width": width}
