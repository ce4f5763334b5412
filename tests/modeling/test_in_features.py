"""Feature names in the config (FPN, RPN, ROI heads, semantic head IN_FEATURES) are checked against the built
backbone's output_shape(), in one line naming the choices; the rules accept any name, so a new backbone's
features need no rule change."""

import pytest
import torch

from detgn.config import get_cfg
from detgn.config.rules import check_config
from detgn.layers import ShapeSpec
from detgn.modeling import build_model
from detgn.modeling.backbone import BACKBONE_REGISTRY, Backbone
from detgn.utils.errors import ConfigValueError


def _cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64])
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.mark.parametrize(
    "opts, words",
    [
        (["MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p7"]], r"MODEL.RPN.IN_FEATURES \['p2', 'p3', 'p4', 'p5', 'p7'\]: \['p7'\] are not among the "
         r"outputs of build_resnet_fpn_backbone \(p2, p3, p4, p5, p6\)"),
        (["MODEL.ROI_HEADS.IN_FEATURES", ["res9"]], r"\['res9'\] are not among the outputs"),
        (["MODEL.FPN.IN_FEATURES", ["res2", "res6"]], r"\['res6'\] are not among the outputs of ResNet \(res2, res3"),
        (["MODEL.META_ARCHITECTURE", "PanopticFPN", "MODEL.MASK_ON", True, "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["q2"]],
         r"MODEL.SEM_SEG_HEAD.IN_FEATURES \['q2'\]"),
    ],
)  # fmt: skip
def test_names_the_backbone_does_not_give_are_refused_in_one_line(opts, words):
    cfg = _cfg(*opts)
    check_config(cfg)  # the rules accept any name
    with pytest.raises(ConfigValueError, match=words) as e:
        build_model(cfg)
    assert "\n" not in str(e.value)


class _TwoLevels(Backbone):
    """A made-up backbone with features named c3 and c4 (no rule knows these names)."""

    def __init__(self):
        super().__init__()
        self.c3 = torch.nn.Conv2d(3, 32, 3, stride=8, padding=1)
        self.c4 = torch.nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self._out_features = ["c3", "c4"]
        self._out_feature_channels = {"c3": 32, "c4": 32}
        self._out_feature_strides = {"c3": 8, "c4": 16}

    def forward(self, x):
        c3 = self.c3(x)
        return {"c3": c3, "c4": self.c4(c3)}


@BACKBONE_REGISTRY.register()
def build_two_levels_test_backbone(cfg, input_shape: ShapeSpec):
    return _TwoLevels()


def test_a_new_backbones_feature_names_need_no_rule_change():
    cfg = _cfg(
        "MODEL.BACKBONE.NAME", "build_two_levels_test_backbone",
        "MODEL.RPN.IN_FEATURES", ["c3", "c4"], "MODEL.ROI_HEADS.IN_FEATURES", ["c3", "c4"],
        "MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64]], "MODEL.ROI_BOX_HEAD.NORM", "", "MODEL.ROI_MASK_HEAD.NORM", "",
    )  # fmt: skip
    check_config(cfg)
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.zeros(3, 64, 96, dtype=torch.uint8), "height": 64, "width": 96}])
    assert "instances" in out[0]
