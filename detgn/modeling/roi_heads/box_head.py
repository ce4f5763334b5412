"""Box heads: ROI features (R, C, 7, 7) -> (R, FC_DIM) box features.

"4conv1fc" with GN (the GN paper's head) = NUM_CONV 4, NUM_FC 1, NORM "GN".
"""

from typing import List

import numpy as np
from fvcore.common.registry import Registry
from torch import nn

from detgn.config import configurable
from detgn.layers import (
    Conv2d,
    ShapeSpec,
    c2_msra_fill,
    c2_xavier_fill,
    get_norm,
    norm_from_cfg,
    run_checkpointed,
    ws_setting,
)

__all__ = ["FastRCNNConvFCHead", "ROI_BOX_HEAD_REGISTRY", "build_box_head"]

ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_BOX_HEAD_REGISTRY.__doc__ = """
Registry for box heads. A registered class is called as `cls(cfg, input_shape)` with
input_shape a ShapeSpec(channels, height, width) of the pooled ROI features. Its forward
maps (R, C, H, W) to (R, D) and it exposes `output_shape` (ShapeSpec(channels=D)).
"""


@ROI_BOX_HEAD_REGISTRY.register()
class FastRCNNConvFCHead(nn.Sequential):
    """NUM_CONV 3x3 convs (each + norm + ReLU) then NUM_FC fully connected layers (+ReLU)."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        conv_dims: List[int],
        fc_dims: List[int],
        conv_norm="",
        ws: bool = False,
        checkpoint: bool = False,
    ):
        """checkpoint: recompute the head's activations in the backward pass (the whole head as one segment; only
        its input, the pooled ROI features, is kept; layers/activation_checkpoint.py)."""
        super().__init__()
        self.checkpoint = bool(checkpoint)
        if len(conv_dims) + len(fc_dims) == 0:
            raise ValueError("A box head needs at least one conv or fc layer")
        self._output_size = (input_shape.channels, input_shape.height, input_shape.width)
        self.conv_norm_relus = []
        for k, dim in enumerate(conv_dims):
            conv = Conv2d(
                self._output_size[0],
                dim,
                kernel_size=3,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, dim),
                activation=nn.ReLU(inplace=True),
                weight_standardization=ws,
            )
            self.add_module(f"conv{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            self._output_size = (dim, self._output_size[1], self._output_size[2])
        self.fcs = []
        for k, fc_dim in enumerate(fc_dims):
            if k == 0:
                self.add_module("flatten", nn.Flatten())
            fc = nn.Linear(int(np.prod(self._output_size)), fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            self.add_module(f"fc_relu{k + 1}", nn.ReLU(inplace=True))
            self.fcs.append(fc)
            self._output_size = fc_dim
        for layer in self.conv_norm_relus:
            c2_msra_fill(layer)
        for layer in self.fcs:
            c2_xavier_fill(layer)

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.ROI_BOX_HEAD
        return dict(
            input_shape=input_shape,
            conv_dims=[h.CONV_DIM] * h.NUM_CONV,
            fc_dims=[h.FC_DIM] * h.NUM_FC,
            conv_norm=norm_from_cfg(h.NORM, cfg),
            ws=ws_setting(cfg.MODEL.WEIGHT_STANDARDIZATION.BOX_HEAD, cfg.MODEL.WEIGHT_STANDARDIZATION.CONVENTION),
            checkpoint="box_head" in cfg.MODEL.ACTIVATION_CHECKPOINT.PARTS,
        )

    def forward(self, x):
        if self.checkpoint:
            return run_checkpointed(self._layers, x, modules=[self])
        return self._layers(x)

    def _layers(self, x):
        for layer in self:
            x = layer(x)
        return x

    @property
    def output_shape(self) -> ShapeSpec:
        o = self._output_size
        if isinstance(o, int):
            return ShapeSpec(channels=o)
        return ShapeSpec(channels=o[0], height=o[1], width=o[2])


def build_box_head(cfg, input_shape):
    return ROI_BOX_HEAD_REGISTRY.get(cfg.MODEL.ROI_BOX_HEAD.NAME)(cfg, input_shape)
