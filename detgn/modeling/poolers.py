"""Multi-level ROIAlign: each box pooled from the FPN level that matches its size.

Shapes: M boxes over the batch, C channels, output (M, C, R, R).
"""

import math
from typing import List

import torch
from torch import nn

from detgn.layers.roi_align import roi_align
from detgn.layers.tracing import is_tracing
from detgn.structures import Boxes
from detgn.utils.errors import ConfigValueError

__all__ = ["ROIPooler", "assign_boxes_to_levels"]


def assign_boxes_to_levels(
    box_lists: List[Boxes], min_level: int, max_level: int, canonical_box_size: int = 224, canonical_level: int = 4
) -> torch.Tensor:
    """(M,) level index (0 = min_level) per box: floor(4 + log2(sqrt(area) / 224 + 1e-8)), clamped."""
    box_sizes = torch.sqrt(torch.cat([b.area() for b in box_lists]))
    levels = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + 1e-8))
    levels = torch.clamp(levels, min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


def convert_boxes_to_pooler_format(box_lists: List[Boxes]) -> torch.Tensor:
    """(M, 5) rows (batch index, x1, y1, x2, y2)."""
    tensors = [b.tensor for b in box_lists]
    return torch.cat([torch.cat([torch.full_like(t[:, :1], i), t], dim=1) for i, t in enumerate(tensors)], dim=0)


class ROIPooler(nn.Module):
    """ROIAlign (aligned=True for "ROIAlignV2") over FPN levels with the canonical level rule."""

    def __init__(
        self,
        output_size: int,
        scales: List[float],
        sampling_ratio: int,
        pooler_type: str = "ROIAlignV2",
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        if pooler_type not in ("ROIAlignV2", "ROIAlign"):
            raise ConfigValueError(f"POOLER_TYPE '{pooler_type}' is not supported; use ROIAlignV2 or ROIAlign")
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.scales = list(scales)
        self.sampling_ratio = sampling_ratio
        self.aligned = pooler_type == "ROIAlignV2"
        min_level = -math.log2(scales[0])
        max_level = -math.log2(scales[-1])
        if not (math.isclose(min_level, int(min_level)) and math.isclose(max_level, int(max_level))):
            raise ValueError(f"Pooler scales must be powers of 1/2, got {scales}")
        self.min_level, self.max_level = int(min_level), int(max_level)
        if len(scales) != self.max_level - self.min_level + 1:
            raise ValueError("Pooler scales must be consecutive FPN levels")
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        """x: L maps (N, C, Hi, Wi); box_lists: N Boxes in input-image pixels -> (M, C, R, R)."""
        num_levels = len(self.scales)
        if len(x) != num_levels:
            raise ValueError(f"ROIPooler expected {num_levels} feature maps, got {len(x)}")
        if len(box_lists) != x[0].size(0):
            raise ValueError(f"ROIPooler got {len(box_lists)} box lists for a batch of {x[0].size(0)}")
        if len(box_lists) == 0:
            return x[0].new_zeros((0, x[0].shape[1]) + self.output_size)
        # box coordinates stay float32 even under autocast (bf16 would move a box edge by pixels);
        # reduced-precision features are sampled in float32 too
        rois = convert_boxes_to_pooler_format(box_lists).float()
        x = [f.float() if f.dtype in (torch.float16, torch.bfloat16) else f for f in x]
        if num_levels == 1:
            return roi_align(x[0], rois, self.output_size, self.scales[0], self.sampling_ratio, self.aligned)
        levels = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )
        if not is_tracing():
            # ROIs grouped by level with one host read (the counts) instead of one nonzero per level; a stable
            # sort keeps each level's ROIs in their order, so every value and gradient is the same as per level
            order = torch.argsort(levels, stable=True)
            counts = torch.bincount(levels, minlength=num_levels).tolist()
            pooled = [
                roi_align(feat, r, self.output_size, scale, self.sampling_ratio, self.aligned)
                for feat, scale, r, n in zip(x, self.scales, rois[order].split(counts), counts)
                if n
            ]
            out = x[0].new_empty((rois.size(0), x[0].shape[1]) + self.output_size)
            if pooled:
                out[order] = torch.cat(pooled, dim=0)
            return out
        out = x[0].new_zeros((rois.size(0), x[0].shape[1]) + self.output_size)
        for level, (feat, scale) in enumerate(zip(x, self.scales)):
            inds = torch.nonzero(levels == level, as_tuple=True)[0]
            if inds.numel() == 0 and not is_tracing():  # a traced graph must handle every level
                continue
            out.index_put_(
                (inds,), roi_align(feat, rois[inds], self.output_size, scale, self.sampling_ratio, self.aligned)
            )
        return out
