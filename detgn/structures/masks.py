"""Instance masks: BitMasks (N, H, W) bool tensors and PolygonMasks (COCO polygons).

Both support indexing, `crop_and_resize(boxes, M)` -> (N, M, M) targets for the mask
head, and conversion to/from COCO RLE through pycocotools.
"""

import copy
from typing import Any, List, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from torchvision.ops import roi_align

__all__ = ["BitMasks", "PolygonMasks", "polygons_to_bitmask", "rle_to_bitmask", "bitmask_to_rle"]


def polygons_to_bitmask(polygons: List[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise one instance's polygons (each flat [x0, y0, x1, y1, ...]) to an (H, W) bool array."""
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64).tolist() for p in polygons], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def rle_to_bitmask(rle: dict, height: int = None, width: int = None) -> np.ndarray:
    """Decode a COCO RLE (compressed or uncompressed counts) into an (H, W) bool array."""
    if isinstance(rle.get("counts"), list):
        h, w = rle["size"]
        rle = mask_util.frPyObjects(rle, h, w)
    return mask_util.decode(rle).astype(bool)


def bitmask_to_rle(mask: np.ndarray) -> dict:
    """Encode an (H, W) mask as compressed COCO RLE with a `str` counts field."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


class BitMasks:
    """Masks of one image as an (N, H, W) bool tensor.

    Indexing is lazy: `masks[idx]` shares the underlying (G, H, W) tensor and records the
    indices, so selecting the matched GT mask for each of 512 sampled ROIs copies nothing;
    `crop_and_resize` samples straight from the shared tensor. `.tensor` materialises.
    """

    def __init__(self, tensor: Union[torch.Tensor, np.ndarray], _index: torch.Tensor = None):
        if isinstance(tensor, np.ndarray):
            tensor = torch.from_numpy(tensor)
        tensor = tensor.to(torch.bool) if tensor.dtype != torch.bool else tensor
        if tensor.dim() != 3:
            raise ValueError(f"BitMasks expects (N, H, W), got {tuple(tensor.shape)}")
        self._base = tensor
        self._index = _index
        self.image_size = tuple(tensor.shape[1:])

    @property
    def tensor(self) -> torch.Tensor:
        if self._index is None:
            return self._base
        return self._base[self._index]

    def to(self, *args, **kwargs) -> "BitMasks":
        base = self._base.to(*args, **kwargs)
        idx = None if self._index is None else self._index.to(base.device)
        return BitMasks(base, idx)

    @property
    def device(self):
        return self._base.device

    def __getitem__(self, item) -> "BitMasks":
        n = len(self)
        if isinstance(item, int):
            item = torch.tensor([item if item >= 0 else n + item])
        elif isinstance(item, slice):
            item = torch.arange(n)[item]
        elif isinstance(item, (list, tuple)):
            item = torch.as_tensor(item, dtype=torch.int64)
        item = item.to(self._base.device)
        if item.dtype == torch.bool:
            item = item.nonzero().squeeze(1)
        idx = item if self._index is None else self._index[item]
        return BitMasks(self._base, idx)

    def __len__(self) -> int:
        return self._base.shape[0] if self._index is None else len(self._index)

    def __iter__(self):
        yield from self.tensor

    def nonempty(self) -> torch.Tensor:
        return self.tensor.flatten(1).any(dim=1)

    def get_bounding_boxes(self):
        """Tight XYXY boxes around each mask (zeros for empty masks)."""
        from .boxes import Boxes

        boxes = torch.zeros(len(self), 4, dtype=torch.float32)
        xs = self.tensor.any(dim=1)
        ys = self.tensor.any(dim=2)
        for i in range(len(self)):
            x = torch.where(xs[i])[0]
            y = torch.where(ys[i])[0]
            if len(x) and len(y):
                boxes[i] = torch.tensor([x[0], y[0], x[-1] + 1, y[-1] + 1], dtype=torch.float32)
        return Boxes(boxes)

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """(N, M, M) float targets: each mask sampled inside its box by ROIAlign (aligned=True)."""
        assert len(boxes) == len(self), f"{len(boxes)} boxes for {len(self)} masks"
        device = self._base.device
        if len(boxes) == 0:
            return torch.empty(0, mask_size, mask_size, device=device)
        idx = torch.arange(len(boxes), device=device) if self._index is None else self._index
        rois = torch.cat([idx[:, None].to(boxes.dtype).to(device), boxes.to(device)], dim=1)
        if self._index is not None:  # only convert the masks that are referenced
            used, inverse = torch.unique(self._index, return_inverse=True)
            src = self._base[used]
            rois[:, 0] = inverse.to(rois.dtype)
        else:
            src = self._base
        out = roi_align(
            src[:, None].to(boxes.dtype if boxes.dtype.is_floating_point else torch.float32),
            rois,
            (mask_size, mask_size),
            1.0,
            0,
            True,
        )
        return (out.squeeze(1) >= 0.5).float()

    @staticmethod
    def from_polygon_masks(polygon_masks: "PolygonMasks", height: int, width: int) -> "BitMasks":
        masks = [polygons_to_bitmask(p, height, width) for p in polygon_masks.polygons]
        if not masks:
            return BitMasks(torch.zeros(0, height, width, dtype=torch.bool))
        return BitMasks(torch.from_numpy(np.stack(masks)))

    @staticmethod
    def cat(masks_list: List["BitMasks"]) -> "BitMasks":
        return BitMasks(torch.cat([m.tensor for m in masks_list], dim=0))

    def to_rles(self) -> List[dict]:
        return [bitmask_to_rle(m) for m in self.tensor.cpu().numpy()]


class PolygonMasks:
    """Masks of one image as polygons: a list (instances) of lists (parts) of float64 arrays."""

    def __init__(self, polygons: List[List[Any]]):
        if not isinstance(polygons, list):
            raise ValueError(f"PolygonMasks expects a list of lists of polygons, got {type(polygons)}")

        def _arr(p):
            if isinstance(p, torch.Tensor):
                p = p.cpu().numpy()
            return np.asarray(p, dtype=np.float64)

        out = []
        for inst in polygons:
            if not isinstance(inst, (list, tuple)):
                raise ValueError(f"Each instance must be a list of polygons, got {type(inst)}")
            parts = [_arr(p) for p in inst]
            for p in parts:
                if len(p) % 2 != 0 or len(p) < 6:
                    raise ValueError(f"A polygon needs at least 3 (x, y) points, got {len(p)} numbers")
            out.append(parts)
        self.polygons = out

    def to(self, *args, **kwargs) -> "PolygonMasks":
        return self

    @property
    def device(self):
        return torch.device("cpu")

    def __len__(self) -> int:
        return len(self.polygons)

    def __iter__(self):
        return iter(self.polygons)

    def __getitem__(self, item) -> "PolygonMasks":
        if isinstance(item, int):
            return PolygonMasks([self.polygons[item]])
        if isinstance(item, slice):
            return PolygonMasks(self.polygons[item])
        if isinstance(item, list):
            return PolygonMasks([self.polygons[i] for i in item])
        if isinstance(item, torch.Tensor):
            if item.dtype == torch.bool:
                item = item.nonzero().squeeze(1)
            return PolygonMasks([self.polygons[i] for i in item.cpu().tolist()])
        raise TypeError(f"Unsupported index {type(item)}")

    def area(self) -> torch.Tensor:
        """(N,) polygon areas by the shoelace formula (summed over parts)."""
        areas = []
        for parts in self.polygons:
            a = 0.0
            for p in parts:
                x, y = p[0::2], p[1::2]
                a += 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
            areas.append(a)
        return torch.tensor(areas)

    def get_bounding_boxes(self):
        from .boxes import Boxes

        boxes = torch.zeros(len(self), 4, dtype=torch.float32)
        for i, parts in enumerate(self.polygons):
            xy = np.concatenate(parts).reshape(-1, 2)
            boxes[i] = torch.tensor([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()])
        return Boxes(boxes)

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """(N, M, M) float targets: each polygon moved into its box frame, scaled to MxM and rasterised."""
        assert len(boxes) == len(self), f"{len(boxes)} boxes for {len(self)} polygons"
        device = boxes.device
        if len(boxes) == 0:
            return torch.empty(0, mask_size, mask_size, device=device)
        boxes_np = boxes.detach().cpu().numpy().astype(np.float64)
        results = []
        for parts, box in zip(self.polygons, boxes_np):
            w, h = max(box[2] - box[0], 0.1), max(box[3] - box[1], 0.1)
            scaled = []
            for p in parts:
                q = p.copy()
                q[0::2] = (q[0::2] - box[0]) * (mask_size / w)
                q[1::2] = (q[1::2] - box[1]) * (mask_size / h)
                scaled.append(q)
            results.append(torch.from_numpy(polygons_to_bitmask(scaled, mask_size, mask_size)))
        return torch.stack(results).to(device=device, dtype=torch.float32)

    @staticmethod
    def cat(masks_list: List["PolygonMasks"]) -> "PolygonMasks":
        return PolygonMasks([p for m in masks_list for p in copy.copy(m.polygons)])

    def to_rles(self, height: int, width: int) -> List[dict]:
        return [bitmask_to_rle(polygons_to_bitmask(p, height, width)) for p in self.polygons]
