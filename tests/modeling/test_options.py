"""Options that had no test: GIoU losses, FPN "avg" fuse, RES5_DILATION, INPUT.CROP, LSJ (a train step), EVAL_PERIOD."""

import json

import pytest
import torch

from detgn.config import get_cfg
from detgn.data import build_detection_train_loader
from detgn.modeling import build_model
from detgn.modeling.backbone.resnet import build_resnet_backbone
from detgn.layers import ShapeSpec

from .util import gn_cfg, make_inputs, small_gn_cfg

from tests.util import QUICK


def _small(cfg):
    """The narrow model of small_gn_cfg() on another base config."""
    ref = small_gn_cfg()
    for key in (
        "RESNETS.DEPTH",
        "RESNETS.RES2_OUT_CHANNELS",
        "FPN.OUT_CHANNELS",
        "ROI_BOX_HEAD.CONV_DIM",
        "ROI_MASK_HEAD.CONV_DIM",
        "ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    ):
        group, name = key.split(".")
        cfg.MODEL[group][name] = ref.MODEL[group][name]
    return cfg


def _losses(cfg, seed=0):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    torch.manual_seed(seed)
    return model, model([make_inputs(seed=0), make_inputs(seed=1)])


def test_giou_losses_replace_smooth_l1():
    cfg = small_gn_cfg()
    _, ref = _losses(cfg)
    cfg.MODEL.RPN.BBOX_REG_LOSS_TYPE = "giou"
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "giou"
    model, giou = _losses(cfg)
    for k in ("loss_rpn_loc", "loss_box_reg"):
        assert torch.isfinite(giou[k]) and giou[k] > 0 and abs(giou[k].item() - ref[k].item()) > 1e-3, k
    for k in ("loss_rpn_cls", "loss_cls"):  # classification is untouched (same sampling, same weights)
        assert abs(giou[k].item() - ref[k].item()) <= 1e-5, k
    giou["loss_box_reg"].backward()
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0


def test_fpn_avg_fuse_halves_the_merge():
    """avg: merged = (lateral + upsampled) / 2. Without a norm after the output conv (GN would divide
    the factor away) the output conv's pre-bias response halves exactly."""
    cfg = small_gn_cfg()
    cfg.MODEL.FPN.NORM = ""
    torch.manual_seed(0)
    summed = build_model(cfg).eval()
    cfg.MODEL.FPN.FUSE_TYPE = "avg"
    averaged = build_model(cfg).eval()
    averaged.load_state_dict(summed.state_dict())
    x = summed.preprocess_image([make_inputs(seed=0)]).tensor
    with torch.no_grad():
        a, b = summed.backbone(x), averaged.backbone(x)
    assert torch.allclose(a["p5"], b["p5"])  # the top level has nothing to merge
    bias = summed.backbone.fpn_output4.bias.view(1, -1, 1, 1)
    assert torch.allclose(b["p4"] - bias, (a["p4"] - bias) / 2, atol=1e-5)
    assert (a["p4"] - b["p4"]).abs().max() > 1e-2
    cfg.MODEL.FPN.FUSE_TYPE = "max"
    with pytest.raises(ValueError, match="FUSE_TYPE"):
        build_model(cfg)


def test_res5_dilation_keeps_stride_16():
    cfg = gn_cfg()
    cfg.MODEL.RESNETS.RES5_DILATION = 2
    resnet = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    assert resnet.output_shape()["res5"].stride == 16
    with torch.no_grad():
        out = resnet(torch.randn(1, 3, 64, 96))
    assert out["res5"].shape[-2:] == out["res4"].shape[-2:] == (4, 6)
    conv2 = resnet.res5[0].conv2
    assert conv2.dilation == (2, 2) and conv2.stride == (1, 1)
    with pytest.raises(ValueError, match="strides doubling"):  # FPN needs a stride per level
        build_model(cfg)
    cfg.MODEL.RESNETS.RES5_DILATION = 3
    with pytest.raises(ValueError, match="MODEL.RESNETS.RES5_DILATION = 3: must be one of 1, 2"):
        build_model(cfg)


def _loader_cfg(**overrides):
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.SOLVER.IMS_PER_BATCH = 2
    for k, v in overrides.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return cfg


def test_input_crop_gives_crops_with_boxes_inside():
    cfg = _loader_cfg(
        **{
            "INPUT.CROP.ENABLED": True,
            "INPUT.CROP.TYPE": "absolute",
            "INPUT.CROP.SIZE": [100, 120],
            "INPUT.MIN_SIZE_TRAIN": (256,),
            "INPUT.MAX_SIZE_TRAIN": 2000,
        }
    )
    batch = next(iter(build_detection_train_loader(cfg, seed=0)))
    for d in batch:
        h, w = d["image"].shape[-2:]
        # a 100x120 (h x w) crop first, then the resize to short side 256: the crop's aspect ratio
        assert min(h, w) == 256 and abs(w / h - 1.2) < 0.01, (h, w)
        boxes = d["instances"].gt_boxes.tensor
        assert len(boxes) > 0 and (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all() and (boxes >= 0).all()
        masks = d["instances"].gt_masks.tensor
        assert masks.shape[-2:] == (h, w)


def test_lsj_train_step():
    cfg = _small(
        _loader_cfg(
            **{
                "INPUT.LSJ.ENABLED": True,
                "INPUT.LSJ.IMAGE_SIZE": 160,
                "INPUT.LSJ.MIN_SCALE": 0.5,
                "INPUT.LSJ.MAX_SCALE": 1.5,
            }
        )
    )
    batch = next(iter(build_detection_train_loader(cfg, seed=0)))
    assert all(tuple(d["image"].shape[-2:]) <= (160, 160) for d in batch)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask"] > 0
    sum(losses.values()).backward()
    assert model.roi_heads.mask_head.predictor.weight.grad.abs().sum() > 0


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_eval_period_evaluates_during_training(quick_run):
    """TEST.EVAL_PERIOD 2 over 4 iterations (the shared run, QUICK_RUN_ARGS in tests/util.py)."""
    out, _ = quick_run
    rows = [json.loads(x) for x in open(out / "metrics.json")]
    evaluated = [row["iteration"] for row in rows if "segm/AP" in row]
    assert evaluated == [1, 4], evaluated  # after iteration 2 (index 1) and after training (iteration == MAX_ITER)
