"""C4 models (Res5ROIHeads): detectron2's key layout, masks from the shared res5 features at inference,
and the refusals of settings it cannot honour."""

import os

import pytest
import torch

from detgn.config import get_cfg
from detgn.modeling import build_model
from detgn.utils.errors import ConfigValueError

from .util import make_inputs

from tests.util import REPO


def _c4_cfg():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "GN", "mask_rcnn_R_50_C4_1x_gn.yaml"))
    cfg.merge_from_list(
        [
            "MODEL.WEIGHTS",
            "",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.ROI_HEADS.NUM_CLASSES",
            3,
            "MODEL.RESNETS.WIDTH_PER_GROUP",
            16,
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            64,
            "MODEL.GROUP_NORM.NUM_GROUPS",
            8,
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
            32,
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            50,
        ]
    )
    return cfg


def test_c4_keys_training_and_masks_at_inference():
    torch.manual_seed(0)
    model = build_model(_c4_cfg())
    keys = [k for k in model.state_dict() if k.startswith("roi_heads.")]
    assert "roi_heads.res5.0.shortcut.norm.weight" in keys and "roi_heads.res5.2.conv3.weight" in keys
    assert {k.split(".")[1] for k in keys} == {"res5", "box_predictor", "mask_head"}
    assert model.roi_heads.mask_head.deconv.in_channels == 512 and not any("mask_fcn" in k for k in keys)
    assert model.roi_heads.pooler.output_size == (14, 14)
    assert model.roi_heads.box_predictor.cls_score.in_features == 512
    losses = model.train()([make_inputs()])
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls"} <= set(losses)
    sum(losses.values()).backward()
    assert model.roi_heads.res5[0].conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([make_inputs(with_gt=False)])[0]["instances"]
    assert out.has("pred_masks") and out.pred_masks.shape[1:] == (128, 160)


@pytest.mark.parametrize(
    "change, match",
    [
        (["MODEL.ROI_HEADS.IN_FEATURES", ["res3", "res4"]], "must be one feature map with Res5ROIHeads"),
        (["MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, True, True]], "must be False for res5 with Res5ROIHeads"),
    ],
)
def test_c4_settings_it_cannot_honour_are_refused(change, match):
    cfg = _c4_cfg()
    cfg.merge_from_list(change)
    with pytest.raises(ConfigValueError, match=match):
        build_model(cfg)
