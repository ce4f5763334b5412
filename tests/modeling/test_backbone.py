import pytest
import torch

from detgn.config.rules import check_config
from detgn.modeling.backbone import build_backbone

from .util import gn_cfg, read_keys


def test_r50_fpn_gn_backbone_matches_detectron2_keys():
    cfg = gn_cfg()
    backbone = build_backbone(cfg)
    got = [("backbone." + k, str(tuple(v.shape))) for k, v in backbone.state_dict().items()]
    expected = [kv for kv in read_keys() if kv[0].startswith("backbone.")]
    assert got == expected
    sd = backbone.state_dict()
    assert sum(v.numel() for v in sd.values()) == 26_854_464
    assert sum(v.numel() for k, v in sd.items() if k.startswith("bottom_up.")) == 23_508_032
    assert sum(v.numel() for k, v in sd.items() if not k.startswith("bottom_up.")) == 3_346_432


def test_backbone_output_shapes_and_freeze():
    cfg = gn_cfg()
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    out = backbone(torch.zeros(1, 3, 64, 96))
    assert out["p2"].shape == (1, 256, 16, 24) and out["p6"].shape == (1, 256, 1, 2)
    # FREEZE_AT 2: stem and res2 frozen, res3 trainable; GN stays GN
    assert not any(p.requires_grad for p in backbone.bottom_up.stem.parameters())
    assert not any(p.requires_grad for p in backbone.bottom_up.res2.parameters())
    assert all(p.requires_grad for p in backbone.bottom_up.res3.parameters())
    assert isinstance(backbone.bottom_up.res2[0].conv1.norm, torch.nn.GroupNorm)
    # stride in the 3x3 for GN weights
    assert backbone.bottom_up.res3[0].conv2.stride == (2, 2) and backbone.bottom_up.res3[0].conv1.stride == (1, 1)


@pytest.mark.parametrize("depth,groups,width", [(101, 1, 64), (101, 32, 8), (18, 1, 64)])
def test_other_depths_build_and_run(depth, groups, width):
    cfg = gn_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NUM_GROUPS = groups
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = width
    if depth == 18:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    backbone = build_backbone(cfg)
    out = backbone(torch.zeros(1, 3, 64, 64))
    assert out["p3"].shape == (1, 256, 8, 8)
    if groups == 32:
        assert backbone.bottom_up.res2[0].conv2.groups == 32
        assert backbone.bottom_up.res2[0].conv2.weight.shape == (256, 8, 3, 3)


def test_frozen_bn_backbone_and_bad_depth():
    cfg = gn_cfg()
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.FPN.NORM = ""
    backbone = build_backbone(cfg)
    assert "fpn_lateral2.bias" in backbone.state_dict()
    assert "bottom_up.stem.conv1.norm.running_mean" in backbone.state_dict()
    cfg.MODEL.RESNETS.DEPTH = 42
    with pytest.raises(ValueError, match="MODEL.RESNETS.DEPTH = 42: must be one of 18, 34, 50, 101, 152"):
        check_config(cfg)  # build_model runs these rules before any builder (config/rules.py)
