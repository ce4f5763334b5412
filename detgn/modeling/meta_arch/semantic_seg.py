"""Semantic segmentation heads on FPN features (PanopticFPN's stuff branch), from SEM_SEG_HEADS_REGISTRY.

Shapes: N images, C classes (MODEL.SEM_SEG_HEAD.NUM_CLASSES), Hp x Wp the padded input size; the head works at
stride COMMON_STRIDE (4: Hp/4 x Wp/4) and returns logits upsampled to Hp x Wp.
"""

from typing import Dict, Optional

import numpy as np
import torch
from fvcore.common.registry import Registry
from torch import nn
from torch.nn import functional as F

from detgn.config import configurable
from detgn.layers import Conv2d, ShapeSpec, c2_msra_fill
from detgn.layers.norm import get_norm
from detgn.utils.errors import ConfigValueError

__all__ = ["SEM_SEG_HEADS_REGISTRY", "SemSegFPNHead", "build_sem_seg_head"]

SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
SEM_SEG_HEADS_REGISTRY.__doc__ = """
Registry for semantic segmentation heads. A registered class is called as `cls(cfg, input_shape)` with the
backbone's {name: ShapeSpec}; its forward takes (features, targets) with targets (N, Hp, Wp) long labels in
training, and returns (None, {"loss_sem_seg": ...}) in training, ((N, C, Hp, Wp) logits, {}) at inference.
"""


@SEM_SEG_HEADS_REGISTRY.register()
class SemSegFPNHead(nn.Module):
    """Panoptic FPN's semantic branch (detectron2's SemSegFPNHead): per FPN level a tower of 3x3 conv + norm +
    ReLU blocks, each followed by a 2x bilinear upsampling until the level reaches COMMON_STRIDE, the towers
    summed, a 1x1 predictor, and the logits upsampled by COMMON_STRIDE (bilinear, align_corners=False).
    State-dict keys as detectron2's: `<level>.<i>.weight` / `.norm.*`, `predictor.*`."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: int,
        common_stride: int,
        loss_weight: float = 1.0,
        norm: Optional[str] = None,
        ignore_value: int = -1,
    ):
        """input_shape: {level: ShapeSpec(channels, stride)} of the levels it reads; num_classes: C; conv_dims:
        channels of the towers; common_stride: the stride (pixels) the towers upsample to; loss_weight: weight
        of the cross-entropy; norm: norm after each tower conv; ignore_value: label with no loss."""
        super().__init__()
        levels = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        if not levels:
            raise ConfigValueError("MODEL.SEM_SEG_HEAD.IN_FEATURES names no feature the backbone outputs")
        self.in_features = [k for k, _ in levels]
        self.ignore_value = ignore_value
        self.common_stride = common_stride
        self.loss_weight = loss_weight
        for name, spec in levels:
            if spec.stride < common_stride or spec.stride % common_stride:
                raise ConfigValueError(
                    f"MODEL.SEM_SEG_HEAD.COMMON_STRIDE {common_stride}: feature {name} has stride {spec.stride}; "
                    "every feature's stride must be a multiple of it (>=)"
                )
        self.scale_heads = []
        for name, spec in levels:
            ops = []
            length = max(1, int(np.log2(spec.stride) - np.log2(common_stride)))
            for k in range(length):
                conv = Conv2d(
                    spec.channels if k == 0 else conv_dims,
                    conv_dims,
                    kernel_size=3,
                    stride=1,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, conv_dims),
                    activation=F.relu,
                )
                c2_msra_fill(conv)
                ops.append(conv)
                if spec.stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*ops))
            self.add_module(name, self.scale_heads[-1])  # registered by level name: detectron2's keys
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1, stride=1, padding=0)
        c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        from detgn.modeling.backbone.backbone import check_in_features

        h = cfg.MODEL.SEM_SEG_HEAD
        check_in_features("MODEL.SEM_SEG_HEAD.IN_FEATURES", h.IN_FEATURES, input_shape, cfg.MODEL.BACKBONE.NAME)
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in h.IN_FEATURES},
            "ignore_value": h.IGNORE_VALUE,
            "num_classes": h.NUM_CLASSES,
            "conv_dims": h.CONVS_DIM,
            "common_stride": h.COMMON_STRIDE,
            "norm": h.NORM,
            "loss_weight": h.LOSS_WEIGHT,
        }

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """-> (N, C, Hp / COMMON_STRIDE, Wp / COMMON_STRIDE) logits."""
        x = None
        for name, head in zip(self.in_features, self.scale_heads):
            y = head(features[name])
            x = y if x is None else x + y
        return self.predictor(x)

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None):
        x = self.layers(features)
        if self.training:
            return None, self.losses(x, targets)
        return F.interpolate(x, scale_factor=self.common_stride, mode="bilinear", align_corners=False), {}

    def losses(self, predictions: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Mean cross-entropy over the labelled pixels of the (N, Hp, Wp) targets, at full resolution."""
        predictions = F.interpolate(
            predictions.float(), scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )
        loss = F.cross_entropy(predictions, targets, reduction="mean", ignore_index=self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}


def build_sem_seg_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    return SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.SEM_SEG_HEAD.NAME)(cfg, input_shape)
