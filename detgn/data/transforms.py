"""Geometric augmentations applied consistently to an image, its boxes, polygons and bit masks.

An Augmentation draws its random parameters from a numpy RandomState and returns a Transform;
a Transform applies the same geometry to the image (H, W, C) uint8, to (N, 2) point arrays
(polygons, box corners) in (x, y) pixels and to (H, W) masks.
"""
from typing import List, Tuple

import cv2
import numpy as np

__all__ = [
    "Transform", "TransformList", "ResizeTransform", "HFlipTransform", "VFlipTransform", "CropTransform", "PadTransform",
    "Augmentation", "ResizeShortestEdge", "RandomFlip", "ResizeScale", "FixedSizeCrop", "RandomCrop", "apply_augmentations",
    "build_augmentation",
]


class Transform:
    """Deterministic geometry; subclasses implement apply_image and apply_coords."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply_segmentation(self, seg: np.ndarray) -> np.ndarray:
        return self.apply_image(seg)

    def apply_box(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) XYXY -> (N, 4) XYXY enclosing the transformed corners."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        corners = boxes[:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 2)
        pts = self.apply_coords(corners).reshape(-1, 4, 2)
        return np.concatenate([pts.min(axis=1), pts.max(axis=1)], axis=1)

    def apply_polygons(self, polygons: List[np.ndarray]) -> List[np.ndarray]:
        return [self.apply_coords(np.asarray(p, dtype=np.float64).reshape(-1, 2)).reshape(-1) for p in polygons]


class TransformList(Transform):
    def __init__(self, transforms: List[Transform]):
        self.transforms = [t for t in transforms if t is not None]

    def apply_image(self, img):
        for t in self.transforms:
            img = t.apply_image(img)
        return img

    def apply_coords(self, coords):
        for t in self.transforms:
            coords = t.apply_coords(coords)
        return coords

    def apply_segmentation(self, seg):
        for t in self.transforms:
            seg = t.apply_segmentation(seg)
        return seg

    def apply_box(self, boxes):
        for t in self.transforms:
            boxes = t.apply_box(boxes)
        return boxes

    def __iter__(self):
        return iter(self.transforms)


class ResizeTransform(Transform):
    """Resize (h, w) -> (new_h, new_w); bilinear for images, nearest for masks."""

    def __init__(self, h, w, new_h, new_w):
        self.h, self.w, self.new_h, self.new_w = h, w, new_h, new_w

    def apply_image(self, img, interp=cv2.INTER_LINEAR):
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"ResizeTransform expected an image of {(self.h, self.w)}, got {img.shape[:2]}")
        if (self.h, self.w) == (self.new_h, self.new_w):
            return img
        out = cv2.resize(img, (self.new_w, self.new_h), interpolation=interp)
        if img.ndim == 3 and out.ndim == 2:
            out = out[:, :, None]
        return out

    def apply_segmentation(self, seg):
        return self.apply_image(seg.astype(np.uint8), interp=cv2.INTER_NEAREST)

    def apply_coords(self, coords):
        coords = np.array(coords, dtype=np.float64)
        coords[:, 0] *= self.new_w / self.w
        coords[:, 1] *= self.new_h / self.h
        return coords


class HFlipTransform(Transform):
    def __init__(self, width: int):
        self.width = width

    def apply_image(self, img):
        return np.ascontiguousarray(img[:, ::-1])

    def apply_coords(self, coords):
        coords = np.array(coords, dtype=np.float64)
        coords[:, 0] = self.width - coords[:, 0]
        return coords


class VFlipTransform(Transform):
    def __init__(self, height: int):
        self.height = height

    def apply_image(self, img):
        return np.ascontiguousarray(img[::-1])

    def apply_coords(self, coords):
        coords = np.array(coords, dtype=np.float64)
        coords[:, 1] = self.height - coords[:, 1]
        return coords


class CropTransform(Transform):
    def __init__(self, x0, y0, w, h):
        self.x0, self.y0, self.w, self.h = int(x0), int(y0), int(w), int(h)

    def apply_image(self, img):
        return img[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w]

    def apply_coords(self, coords):
        coords = np.array(coords, dtype=np.float64)
        coords[:, 0] -= self.x0
        coords[:, 1] -= self.y0
        return coords


class PadTransform(Transform):
    """Pad at the bottom/right to (h, w) with `pad_value`."""

    def __init__(self, pad_h: int, pad_w: int, pad_value: float = 0.0):
        self.pad_h, self.pad_w, self.pad_value = pad_h, pad_w, pad_value

    def apply_image(self, img):
        widths = [(0, self.pad_h), (0, self.pad_w)] + [(0, 0)] * (img.ndim - 2)
        return np.pad(img, widths, constant_values=self.pad_value)

    def apply_segmentation(self, seg):
        widths = [(0, self.pad_h), (0, self.pad_w)]
        return np.pad(seg, widths, constant_values=0)

    def apply_coords(self, coords):
        return np.array(coords, dtype=np.float64)


class Augmentation:
    """Draws a Transform for an image of size (h, w) from `rng`."""

    def get_transform(self, image: np.ndarray, rng: np.random.RandomState) -> Transform:
        raise NotImplementedError


def _shortest_edge_size(h, w, short, max_size):
    scale = short * 1.0 / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


class ResizeShortestEdge(Augmentation):
    """Resize so the short side is `short_edge_length` (a choice or a [min, max] range), long side <= max_size."""

    def __init__(self, short_edge_length, max_size: int = 10 ** 9, sample_style: str = "range"):
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got '{sample_style}'")
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(f"INPUT.MIN_SIZE_TRAIN must have two values with 'range' sampling, got {short_edge_length}")
        self.short_edge_length = tuple(short_edge_length)
        self.max_size = max_size
        self.is_range = sample_style == "range"

    def get_transform(self, image, rng):
        h, w = image.shape[:2]
        if self.is_range:
            short = rng.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            short = self.short_edge_length[rng.randint(len(self.short_edge_length))]
        if short == 0:
            return TransformList([])
        new_h, new_w = _shortest_edge_size(h, w, short, self.max_size)
        return ResizeTransform(h, w, new_h, new_w)


class RandomFlip(Augmentation):
    def __init__(self, prob: float = 0.5, horizontal: bool = True, vertical: bool = False):
        if horizontal == vertical:
            raise ValueError("RandomFlip flips either horizontally or vertically")
        self.prob, self.horizontal = prob, horizontal

    def get_transform(self, image, rng):
        h, w = image.shape[:2]
        if rng.rand() < self.prob:
            return HFlipTransform(w) if self.horizontal else VFlipTransform(h)
        return TransformList([])


class ResizeScale(Augmentation):
    """Large-scale jitter: scale so the image fits `target` (h, w) times a random factor in [min_scale, max_scale]."""

    def __init__(self, min_scale: float, max_scale: float, target_height: int, target_width: int):
        self.min_scale, self.max_scale = min_scale, max_scale
        self.target_height, self.target_width = target_height, target_width

    def get_transform(self, image, rng):
        h, w = image.shape[:2]
        factor = rng.uniform(self.min_scale, self.max_scale)
        scale = min(self.target_height * factor / h, self.target_width * factor / w)
        new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        return ResizeTransform(h, w, new_h, new_w)


class FixedSizeCrop(Augmentation):
    """Random crop to at most `crop_size` (h, w), then pad to exactly crop_size (bottom/right)."""

    def __init__(self, crop_size: Tuple[int, int], pad_value: float = 128.0):
        self.crop_size = crop_size
        self.pad_value = pad_value

    def get_transform(self, image, rng):
        h, w = image.shape[:2]
        ch, cw = self.crop_size
        max_y, max_x = max(h - ch, 0), max(w - cw, 0)
        y0 = int(rng.randint(0, max_y + 1))
        x0 = int(rng.randint(0, max_x + 1))
        crop = CropTransform(x0, y0, min(cw, w), min(ch, h))
        pad = PadTransform(max(ch - h, 0), max(cw - w, 0), self.pad_value)
        return TransformList([crop, pad])


class RandomCrop(Augmentation):
    """Random crop of a fraction ("relative", "relative_range") or absolute size ("absolute")."""

    def __init__(self, crop_type: str, crop_size):
        if crop_type not in ("relative", "relative_range", "absolute"):
            raise ValueError(f"INPUT.CROP.TYPE must be relative, relative_range or absolute, got '{crop_type}'")
        self.crop_type, self.crop_size = crop_type, crop_size

    def get_transform(self, image, rng):
        h, w = image.shape[:2]
        if self.crop_type == "relative":
            ch, cw = int(h * self.crop_size[0] + 0.5), int(w * self.crop_size[1] + 0.5)
        elif self.crop_type == "relative_range":
            fh = self.crop_size[0] + rng.rand() * (1 - self.crop_size[0])
            fw = self.crop_size[1] + rng.rand() * (1 - self.crop_size[1])
            ch, cw = int(h * fh + 0.5), int(w * fw + 0.5)
        else:
            ch, cw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        y0 = rng.randint(h - ch + 1)
        x0 = rng.randint(w - cw + 1)
        return CropTransform(x0, y0, cw, ch)


def apply_augmentations(augs: List[Augmentation], image: np.ndarray, rng: np.random.RandomState):
    """Apply augmentations in order; returns (new image, TransformList)."""
    transforms = []
    for aug in augs:
        t = aug.get_transform(image, rng)
        image = t.apply_image(image)
        transforms.append(t)
    return image, TransformList(transforms)


def build_augmentation(cfg, is_train: bool) -> List[Augmentation]:
    """ResizeShortestEdge (+ RandomFlip, optional crop) from INPUT.*, or large-scale jitter when INPUT.LSJ.ENABLED."""
    if is_train and cfg.INPUT.LSJ.ENABLED:
        size = cfg.INPUT.LSJ.IMAGE_SIZE
        augs = [ResizeScale(cfg.INPUT.LSJ.MIN_SCALE, cfg.INPUT.LSJ.MAX_SCALE, size, size), FixedSizeCrop((size, size))]
    elif is_train:
        augs = [ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
        if cfg.INPUT.CROP.ENABLED:
            augs.insert(0, RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    else:
        augs = [ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    if is_train and cfg.INPUT.RANDOM_FLIP != "none":
        if cfg.INPUT.RANDOM_FLIP not in ("horizontal", "vertical"):
            raise ValueError(f"INPUT.RANDOM_FLIP must be horizontal, vertical or none, got '{cfg.INPUT.RANDOM_FLIP}'")
        augs.append(RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal", vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    return augs
