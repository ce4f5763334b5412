"""Boxes: an (N, 4) tensor of XYXY boxes in absolute pixels (width = x2 - x1, no +1)."""

from enum import IntEnum
from typing import List, Tuple

import numpy as np
import torch

__all__ = ["Boxes", "BoxMode", "pairwise_iou", "pairwise_intersection"]


class BoxMode(IntEnum):
    """How a box is written in a dataset dict (values match detectron2's)."""

    XYXY_ABS = 0
    XYWH_ABS = 1

    @staticmethod
    def convert(box, from_mode: "BoxMode", to_mode: "BoxMode"):
        """Convert a box (list/tuple of 4, or an (N, 4) array/tensor) between modes."""
        if from_mode == to_mode:
            return box
        single = isinstance(box, (list, tuple))
        if single:
            arr = torch.tensor([box], dtype=torch.float64)
        elif isinstance(box, np.ndarray):
            arr = torch.from_numpy(np.asarray(box, dtype=np.float64)).reshape(-1, 4)
        else:
            arr = box.clone().reshape(-1, 4)
        if from_mode == BoxMode.XYWH_ABS and to_mode == BoxMode.XYXY_ABS:
            arr[:, 2] += arr[:, 0]
            arr[:, 3] += arr[:, 1]
        elif from_mode == BoxMode.XYXY_ABS and to_mode == BoxMode.XYWH_ABS:
            arr[:, 2] -= arr[:, 0]
            arr[:, 3] -= arr[:, 1]
        else:
            raise NotImplementedError(f"BoxMode conversion {from_mode} -> {to_mode}")
        if single:
            return type(box)(arr[0].tolist())
        if isinstance(box, np.ndarray):
            return arr.numpy().astype(box.dtype)
        return arr


class Boxes:
    """A list of boxes as one (N, 4) float tensor `tensor` in XYXY absolute coordinates."""

    def __init__(self, tensor: torch.Tensor):
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.as_tensor(tensor, dtype=torch.float32)
        if tensor.numel() == 0:
            tensor = tensor.reshape(-1, 4).to(dtype=torch.float32 if not tensor.is_floating_point() else tensor.dtype)
        if tensor.dim() != 2 or tensor.size(-1) != 4:
            raise ValueError(f"Boxes expects an (N, 4) tensor, got shape {tuple(tensor.shape)}")
        self.tensor = tensor

    def clone(self) -> "Boxes":
        return Boxes(self.tensor.clone())

    def to(self, *args, **kwargs) -> "Boxes":
        return Boxes(self.tensor.to(*args, **kwargs))

    def area(self) -> torch.Tensor:
        """(N,) areas in square pixels."""
        b = self.tensor
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def clip(self, box_size: Tuple[int, int]) -> None:
        """Clip in place to an image of size (height, width) (ints, or 0-d tensors in a traced graph)."""
        h, w = box_size
        if isinstance(h, torch.Tensor) or isinstance(w, torch.Tensor):  # traced sizes: keep them in the graph
            t = self.tensor.clamp(min=0)
            limit = torch.stack([torch.as_tensor(w), torch.as_tensor(h)]).to(t.dtype).repeat(2)
            self.tensor = torch.min(t, limit)
            return
        x1 = self.tensor[:, 0].clamp(min=0, max=w)
        y1 = self.tensor[:, 1].clamp(min=0, max=h)
        x2 = self.tensor[:, 2].clamp(min=0, max=w)
        y2 = self.tensor[:, 3].clamp(min=0, max=h)
        self.tensor = torch.stack((x1, y1, x2, y2), dim=-1)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """(N,) bool: boxes whose width and height are both larger than `threshold`."""
        b = self.tensor
        return ((b[:, 2] - b[:, 0]) > threshold) & ((b[:, 3] - b[:, 1]) > threshold)

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Scale coordinates in place."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    def inside_box(self, box_size: Tuple[int, int], boundary_threshold: int = 0) -> torch.Tensor:
        h, w = box_size
        b = self.tensor
        t = boundary_threshold
        return (b[:, 0] >= -t) & (b[:, 1] >= -t) & (b[:, 2] < w + t) & (b[:, 3] < h + t)

    def __getitem__(self, item) -> "Boxes":
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1))
        b = self.tensor[item]
        return Boxes(b.view(-1, 4))

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __iter__(self):
        yield from self.tensor

    def __repr__(self):
        return f"Boxes({self.tensor})"

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @classmethod
    def cat(cls, boxes_list: List["Boxes"]) -> "Boxes":
        if len(boxes_list) == 0:
            return cls(torch.empty(0, 4))
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))


def pairwise_intersection(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """(N, M) intersection areas."""
    a, b = boxes1.tensor, boxes2.tensor
    wh = torch.min(a[:, None, 2:], b[None, :, 2:]) - torch.max(a[:, None, :2], b[None, :, :2])
    wh.clamp_(min=0)
    return wh.prod(dim=2)


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """(N, M) IoU between every pair; 0 where either box has no area.

    Not torchvision.ops.box_iou: that divides 0 by 0 (NaN) for a pair of empty boxes, where
    detectron2 (SEMANTICS.md) returns 0, and the matcher would then compare NaNs."""
    area1, area2 = boxes1.area(), boxes2.area()
    inter = pairwise_intersection(boxes1, boxes2)
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(inter > 0, inter / union, torch.zeros(1, dtype=inter.dtype, device=inter.device))
