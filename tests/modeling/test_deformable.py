"""Deformable ResNet stages in the model: detectron2's key layout, a training step that moves the
offsets, and the config refusals. (Layer-level tests: tests/layers/test_deform_conv.py.)"""

import pytest
import torch

from detgn.config.rules import check_config
from detgn.modeling import build_model
from detgn.modeling.backbone.resnet import DeformBottleneckBlock
from detgn.utils.errors import ConfigValueError

from .util import gn_cfg, make_inputs, read_keys, small_gn_cfg


def _shape(t):
    return "(" + ", ".join(str(d) for d in t.shape) + ("," if t.dim() == 1 else "") + ")"


@pytest.mark.parametrize("modulated, groups", [(False, 1), (True, 2)])
def test_dconv_c3_c5_model_has_detectron2s_keys(modulated, groups):
    """detectron2 (DeformBottleneckBlock, resnet.py) adds exactly conv2_offset.{weight, bias} to each block of a
    deformable stage: (18 or 27) x G output channels; every other key and shape is the plain GN model's."""
    cfg = gn_cfg()
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    cfg.MODEL.RESNETS.DEFORM_MODULATED = modulated
    cfg.MODEL.RESNETS.DEFORM_NUM_GROUPS = groups
    check_config(cfg)
    model = build_model(cfg)
    got = {k: _shape(v) for k, v in model.state_dict().items()}
    expected = dict(read_keys())
    bottleneck = {"res3": 128, "res4": 256, "res5": 512}
    blocks = {(k.split(".")[2], k.split(".")[3]) for k in expected if k.startswith("backbone.bottom_up.res")}
    for stage, block in blocks:
        if stage in bottleneck:
            c, o = bottleneck[stage], (27 if modulated else 18) * groups
            expected[f"backbone.bottom_up.{stage}.{block}.conv2_offset.weight"] = f"({o}, {c}, 3, 3)"
            expected[f"backbone.bottom_up.{stage}.{block}.conv2_offset.bias"] = f"({o},)"
    assert got == expected
    assert sum(isinstance(m, DeformBottleneckBlock) for m in model.modules()) == 4 + 6 + 3


def test_deformable_training_step_moves_the_offsets():
    cfg = small_gn_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 16
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.GROUP_NORM.NUM_GROUPS = 8  # 16-channel bottlenecks in res2
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, True, True]
    cfg.MODEL.RESNETS.DEFORM_MODULATED = True
    check_config(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    offset = model.backbone.bottom_up.res4[0].conv2_offset
    assert not offset.weight.any()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model([make_inputs()])
    sum(losses.values()).backward()
    assert offset.weight.grad.abs().sum() > 0
    opt.step()
    assert offset.weight.any()
    model.eval()
    with torch.no_grad():
        assert model([make_inputs(with_gt=False)])[0]["instances"].has("pred_masks")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"MODEL.RESNETS.DEFORM_MODULATED": True}, "True for at least one stage"),
        ({"MODEL.RESNETS.DEFORM_NUM_GROUPS": 2}, "True for at least one stage"),
        ({"MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, True, True]}, "a list of 4 value"),
        (
            {"MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, True, True, True], "MODEL.RESNETS.DEFORM_NUM_GROUPS": 3},
            "a divisor",
        ),
    ],
)
def test_deformable_options_that_would_do_nothing_are_refused(change, match):
    cfg = gn_cfg()
    for k, v in change.items():
        setattr(cfg.MODEL.RESNETS, k.rsplit(".", 1)[1], v)
    with pytest.raises(ConfigValueError, match=match):
        check_config(cfg)


def test_deformable_resnet18_is_refused_by_name():
    cfg = small_gn_cfg()
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    with pytest.raises(ConfigValueError, match="DEFORM_ON_PER_STAGE = .*must be all False for ResNet-18"):
        build_model(cfg)
