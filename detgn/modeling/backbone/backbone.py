"""Backbone base class and BACKBONE_REGISTRY.

A backbone maps an (N, 3, H, W) image batch to a dict of named feature maps and describes
them with `output_shape()` -> {name: ShapeSpec(channels, stride)}.
"""

from abc import ABCMeta, abstractmethod
from typing import Dict

import torch
from fvcore.common.registry import Registry
from torch import nn

from detgn.layers import ShapeSpec

__all__ = ["Backbone", "BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registry for backbones. A registered object is called as `obj(cfg, input_shape)` with
`input_shape` a ShapeSpec of the input channels, and returns a `Backbone` instance.
"""


class Backbone(nn.Module, metaclass=ABCMeta):
    """Base class: `forward(x: (N, C, H, W)) -> Dict[str, Tensor]` of named feature maps."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        pass

    @property
    def size_divisibility(self) -> int:
        """Input height/width must be a multiple of this (0 = no constraint)."""
        return 0

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


def build_backbone(cfg, input_shape: ShapeSpec = None) -> Backbone:
    """Build the backbone named by cfg.MODEL.BACKBONE.NAME."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, input_shape)
    assert isinstance(backbone, Backbone)
    return backbone
