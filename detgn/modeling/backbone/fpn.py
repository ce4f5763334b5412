"""Feature Pyramid Network on a bottom-up backbone, with an optional norm (GN) after each conv.

Parameter names follow detectron2: fpn_lateral{2..5}, fpn_output{2..5} (+ .norm), bottom_up.*.
Outputs p2..p5 (+ p6 by a stride-2 max-pool of p5 in Mask R-CNN).
"""

import math
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from detgn.layers import Conv2d, ShapeSpec, c2_xavier_fill, get_norm, norm_from_cfg, run_checkpointed, ws_setting
from detgn.utils.errors import ConfigValueError

from .backbone import BACKBONE_REGISTRY, Backbone
from .resnet import build_resnet_backbone

__all__ = ["FPN", "LastLevelMaxPool", "build_resnet_fpn_backbone"]


class LastLevelMaxPool(nn.Module):
    """P6 = max_pool2d(P5, kernel_size=1, stride=2)."""

    num_levels = 1
    in_feature = "p5"

    def forward(self, x):
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class FPN(Backbone):
    """Top-down pathway with lateral connections (Lin et al., 2017)."""

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int,
        norm="",
        top_block=None,
        fuse_type: str = "sum",
        ws: bool = False,
        checkpoint: bool = False,
    ):
        """checkpoint: recompute the top-down pathway's activations (laterals, merges, outputs, top block) in the
        backward pass instead of keeping them (layers/activation_checkpoint.py); the bottom-up has its own."""
        super().__init__()
        self.checkpoint = bool(checkpoint)
        input_shapes = bottom_up.output_shape()
        from .backbone import check_in_features

        check_in_features("MODEL.FPN.IN_FEATURES", in_features, input_shapes, type(bottom_up).__name__)
        strides = [input_shapes[f].stride for f in in_features]
        in_channels_per_feature = [input_shapes[f].channels for f in in_features]
        for i in range(1, len(strides)):
            if strides[i] != 2 * strides[i - 1]:
                raise ValueError(f"FPN needs strides doubling level to level, got {strides}")
        if fuse_type not in ("sum", "avg"):
            raise ConfigValueError(f"MODEL.FPN.FUSE_TYPE must be 'sum' or 'avg', got '{fuse_type}'")
        use_bias = norm == "" or norm is None
        lateral_convs, output_convs = [], []
        for in_ch, stride in zip(in_channels_per_feature, strides):
            lateral = Conv2d(
                in_ch, out_channels, 1, bias=use_bias, norm=get_norm(norm, out_channels), weight_standardization=ws
            )
            output = Conv2d(
                out_channels,
                out_channels,
                3,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
                weight_standardization=ws,
            )
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            stage = int(math.log2(stride))
            self.add_module(f"fpn_lateral{stage}", lateral)
            self.add_module(f"fpn_output{stage}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # plain lists (not ModuleList), coarsest first, so parameter names stay fpn_*
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self.top_block = top_block
        self.in_features = tuple(in_features)
        self.bottom_up = bottom_up
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            last = int(math.log2(strides[-1]))
            for s in range(last, last + top_block.num_levels):
                self._out_feature_strides[f"p{s + 1}"] = 2 ** (s + 1)
        self._out_features = list(self._out_feature_strides.keys())
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._fuse_type = fuse_type

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (N, C, H, W) -> {"p2": (N, 256, H/4, W/4), ..., "p6": (N, 256, H/64, W/64)}."""
        bottom_up_features = self.bottom_up(x)
        if not self.checkpoint:
            return self._top_down(*[bottom_up_features[f] for f in self.in_features])
        features = [bottom_up_features[f] for f in self.in_features]
        return run_checkpointed(self._top_down, *features, modules=self.lateral_convs + self.output_convs)

    def _top_down(self, *features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The bottom-up features of in_features, in order -> {"p2": ..., "p6": ...}."""
        bottom_up_features = dict(zip(self.in_features, features))
        results = []
        prev = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results.append(self.output_convs[0](prev))
        for idx, (lateral_conv, output_conv) in enumerate(zip(self.lateral_convs, self.output_convs)):
            if idx == 0:
                continue
            features = bottom_up_features[self.in_features[-idx - 1]]
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = lateral_conv(features) + top_down
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, output_conv(prev))
        if self.top_block is not None:
            src = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(src))
        return dict(zip(self._out_features, results))


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet + FPN with P6 max-pool (Mask R-CNN's backbone), norms from MODEL.RESNETS/FPN.NORM."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=norm_from_cfg(cfg.MODEL.FPN.NORM, cfg),
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        ws=ws_setting(cfg.MODEL.WEIGHT_STANDARDIZATION.FPN, cfg.MODEL.WEIGHT_STANDARDIZATION.CONVENTION),
        checkpoint="fpn" in cfg.MODEL.ACTIVATION_CHECKPOINT.PARTS,
    )
