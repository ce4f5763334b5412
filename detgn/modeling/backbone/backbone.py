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
from detgn.utils.errors import ConfigValueError

__all__ = ["Backbone", "BACKBONE_REGISTRY", "build_backbone", "check_in_features"]

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


def check_in_features(key: str, names, available: Dict[str, ShapeSpec], built_by: str = "the backbone") -> None:
    """The feature names a head reads (config `key`) against what the built backbone outputs (`available`, its
    output_shape()): one ConfigValueError naming the missing ones and the choices. Names are not listed in the
    config rules, so a new backbone's features need no rule change."""
    names = list(names)
    missing = [n for n in names if n not in available]
    if not names or missing:
        have = ", ".join(sorted(available, key=lambda k: (available[k].stride or 0, k)))
        what = f"{missing} are not" if missing else "names nothing that is"
        raise ConfigValueError(f"{key} {names}: {what} among the outputs of {built_by} ({have})")


def build_backbone(cfg, input_shape: ShapeSpec = None) -> Backbone:
    """Build the backbone named by cfg.MODEL.BACKBONE.NAME."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, input_shape)
    assert isinstance(backbone, Backbone)
    return backbone
