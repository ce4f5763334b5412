"""The recipe configs (Cascade, deformable, C4, R-101, scratch SyncBN 9x, Detectron's recipe,
mmdetection's GN / GN+WS) each run one real training iteration (forward, backward, SGD step) on CPU.

Tiny input (one 96x128 image, one box), few ROIs; the networks are the configs' own (norms, heads, depth), except
that ResNet-152 trains at depth 50 here (its 32x8d ResNeXt blocks, deformable stages, GN and Cascade heads kept; a
step of the full X-152 takes ~30 s on 2 CPU cores, and tests/config/test_all_configs.py builds it at full depth)."""

import os

import pytest
import torch

from detgn.config import get_cfg
from detgn.config.rules import check_config
from detgn.modeling import build_model
from detgn.structures import BitMasks, Boxes, Instances

from tests.util import REPO

RECIPES = [
    "GN/detectron_mask_rcnn_R_50_FPN_2x_gn.yaml",
    "GN/detectron_mask_rcnn_R_101_FPN_2x_gn.yaml",
    "GN/mask_rcnn_R_101_FPN_3x_gn.yaml",
    "GN/scratch_mask_rcnn_R_101_FPN_3x_gn.yaml",
    "GN/mask_rcnn_R_50_C4_1x_gn.yaml",
    "Misc/scratch_mask_rcnn_R_50_FPN_9x_syncbn.yaml",
    "Misc/cascade_mask_rcnn_R_50_FPN_3x_gn.yaml",
    "Misc/cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.yaml",
    "mmdet/mask_rcnn_R_50_FPN_2x_gn.yaml",
    "mmdet/mask_rcnn_R_50_FPN_2x_gn_ws.yaml",
    "nuclei_quickstart_cascade.yaml",
]


def _input(h=96, w=128):
    g = torch.Generator().manual_seed(0)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 70.0, 80.0]]))
    inst.gt_classes = torch.tensor([1])
    masks = torch.zeros(1, h, w, dtype=torch.bool)
    masks[0, 12:80, 10:70] = True
    inst.gt_masks = BitMasks(masks)
    return {
        "image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
        "instances": inst,
        "height": h,
        "width": w,
    }


@pytest.mark.parametrize("config", RECIPES)
def test_recipe_trains_one_iteration(config):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", config))
    cfg.merge_from_list(
        [
            "MODEL.WEIGHTS",
            "",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.ROI_HEADS.NUM_CLASSES",
            3,
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
            16,
            "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
            32,
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
            200,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN",
            50,
        ]
    )
    if cfg.MODEL.RESNETS.DEPTH == 152:
        cfg.MODEL.RESNETS.DEPTH = 50
    check_config(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    losses = model([_input()])
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    if cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads":
        assert {f"loss_cls_stage{k}" for k in range(3)} <= set(losses)
    sum(losses.values()).backward()
    torch.optim.SGD(params, lr=1e-3).step()
    changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params))
    assert changed > 0.5 * len(params), f"{changed} of {len(params)} trainable tensors moved"
