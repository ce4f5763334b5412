"""Anchors for FPN levels (detectron2's DefaultAnchorGenerator).

Shapes: L levels, A cell anchors per location, Hi x Wi level sizes.
"""

import math
from typing import List

import torch
from fvcore.common.registry import Registry
from torch import nn

from detgn.config import configurable
from detgn.layers import ShapeSpec
from detgn.structures import Boxes
from detgn.utils.errors import ConfigValueError

__all__ = ["ANCHOR_GENERATOR_REGISTRY", "DefaultAnchorGenerator", "build_anchor_generator"]

ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ANCHOR_GENERATOR_REGISTRY.__doc__ = """
Registry for anchor generators. A registered class is called as `cls(cfg, input_shape)` with input_shape the
list of ShapeSpec of the RPN's feature maps; its forward maps those L maps to L Boxes of anchors (location-major)
and it exposes `num_anchors` (anchors per location, per level) and `box_dim`.
"""


def _broadcast(params, num_features, name):
    if not isinstance(params[0], (list, tuple)):
        return [params] * num_features
    if len(params) == 1:
        return list(params) * num_features
    if len(params) != num_features:
        raise ConfigValueError(f"ANCHOR_GENERATOR.{name} has {len(params)} entries for {num_features} feature maps")
    return params


class BufferList(nn.Module):
    """Non-persistent buffers (not saved in the state_dict, moved by .to())."""

    def __init__(self, buffers):
        super().__init__()
        for i, b in enumerate(buffers):
            self.register_buffer(str(i), b, persistent=False)

    def __len__(self):
        return len(self._buffers)

    def __iter__(self):
        return iter(self._buffers.values())


@ANCHOR_GENERATOR_REGISTRY.register()
class DefaultAnchorGenerator(nn.Module):
    """Cell anchors centred at 0 for each (size, aspect ratio), shifted over every level."""

    box_dim = 4

    @configurable
    def __init__(self, *, sizes, aspect_ratios, strides: List[int], offset: float = 0.0):
        super().__init__()
        self.strides = list(strides)
        self.num_features = len(self.strides)
        sizes = _broadcast(sizes, self.num_features, "SIZES")
        aspect_ratios = _broadcast(aspect_ratios, self.num_features, "ASPECT_RATIOS")
        self.cell_anchors = BufferList([self.generate_cell_anchors(s, a) for s, a in zip(sizes, aspect_ratios)])
        if not 0.0 <= offset < 1.0:
            raise ConfigValueError(f"ANCHOR_GENERATOR.OFFSET must be in [0, 1), got {offset}")
        self.offset = offset

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        return dict(
            sizes=cfg.MODEL.ANCHOR_GENERATOR.SIZES,
            aspect_ratios=cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
            strides=[x.stride for x in input_shape],
            offset=cfg.MODEL.ANCHOR_GENERATOR.OFFSET,
        )

    @property
    def num_cell_anchors(self) -> List[int]:
        return [len(c) for c in self.cell_anchors]

    num_anchors = num_cell_anchors

    @staticmethod
    def generate_cell_anchors(sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)) -> torch.Tensor:
        """(len(sizes) * len(aspect_ratios), 4) XYXY anchors centred at 0; sizes outer, ratios inner."""
        anchors = []
        for size in sizes:
            area = size**2.0
            for ratio in aspect_ratios:
                w = math.sqrt(area / ratio)
                h = ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(anchors)

    def _grid_anchors(self, grid_sizes):
        out = []
        for (h, w), stride, base in zip(grid_sizes, self.strides, self.cell_anchors):
            dev = base.device
            xs = torch.arange(self.offset * stride, w * stride, step=stride, dtype=torch.float32, device=dev)
            ys = torch.arange(self.offset * stride, h * stride, step=stride, dtype=torch.float32, device=dev)
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return out

    def forward(self, features: List[torch.Tensor]) -> List[Boxes]:
        """features: L maps (N, C, Hi, Wi) -> L Boxes of (Hi * Wi * A, 4), location-major."""
        grid_sizes = [f.shape[-2:] for f in features]
        return [Boxes(x) for x in self._grid_anchors(grid_sizes)]


def build_anchor_generator(cfg, input_shape: List[ShapeSpec]):
    """The generator named by MODEL.ANCHOR_GENERATOR.NAME in ANCHOR_GENERATOR_REGISTRY, called (cfg, input_shape)."""
    name = cfg.MODEL.ANCHOR_GENERATOR.NAME
    if name not in ANCHOR_GENERATOR_REGISTRY:
        raise ConfigValueError(
            f"MODEL.ANCHOR_GENERATOR.NAME '{name}' is not registered; registered: "
            f"{', '.join(sorted(k for k, _ in ANCHOR_GENERATOR_REGISTRY))}"
        )
    return ANCHOR_GENERATOR_REGISTRY.get(name)(cfg, input_shape)
