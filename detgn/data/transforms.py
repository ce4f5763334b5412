"""Geometric augmentations applied consistently to an image, its boxes, polygons and bit masks.

Transforms are fvcore's (`fvcore.transforms`: Transform, TransformList, HFlip/VFlip, NoOp, Pad), as
in detectron2; detgn adds the two whose behaviour it fixes itself (cv2 resizing, polygon cropping
without shapely). An Augmentation draws its random parameters from a numpy RandomState and returns a
Transform; a Transform applies the same geometry to the image (H, W, C) uint8, to (N, 2) point
arrays (polygons, box corners) in (x, y) pixels and to (H, W) masks.
"""

from typing import List, Optional, Tuple

import cv2
import numpy as np
from fvcore.transforms.transform import CropTransform as _FvcoreCropTransform
from fvcore.transforms.transform import (
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

from detgn.utils.errors import ConfigValueError

__all__ = [
    "Transform",
    "TransformList",
    "ResizeTransform",
    "HFlipTransform",
    "VFlipTransform",
    "CropTransform",
    "PadTransform",
    "NoOpTransform",
    "AugInput",
    "Augmentation",
    "ResizeShortestEdge",
    "RandomFlip",
    "ResizeScale",
    "FixedSizeCrop",
    "RandomCrop",
    "RandomCropWithInstance",
    "apply_augmentations",
    "build_augmentation",
]


RESIZE_LIBRARIES = ("opencv", "pil")


class ResizeTransform(Transform):
    """Resize (h, w) -> (new_h, new_w): bilinear for images, nearest for masks, with OpenCV (`library` "opencv",
    detgn's default: fast on uint8 and what detgn's published numbers were trained with) or Pillow ("pil":
    detectron2's, whose bilinear filter averages over the source pixels a shrunk output pixel covers, so its
    pixels differ from OpenCV's by a few levels; INPUT.RESIZE_LIBRARY pil reproduces detectron2's inputs).
    Images other than uint8 are resized with OpenCV either way."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int, library: str = "opencv"):
        super().__init__()
        if library not in RESIZE_LIBRARIES:
            raise ValueError(f"resize library must be one of {RESIZE_LIBRARIES}, got {library!r}")
        self._set_attributes(dict(h=h, w=w, new_h=new_h, new_w=new_w, library=library))

    def apply_image(self, img: np.ndarray, interp=cv2.INTER_LINEAR) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"ResizeTransform expected an image of {(self.h, self.w)}, got {img.shape[:2]}")
        if (self.h, self.w) == (self.new_h, self.new_w):
            return img
        if self.library == "pil" and img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (1, 3, 4)):
            from PIL import Image

            resample = Image.NEAREST if interp == cv2.INTER_NEAREST else Image.BILINEAR
            planar = img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img
            out = np.asarray(Image.fromarray(planar).resize((self.new_w, self.new_h), resample))
            return out[:, :, None] if img.ndim == 3 and out.ndim == 2 else out
        out = cv2.resize(img, (self.new_w, self.new_h), interpolation=interp)
        if img.ndim == 3 and out.ndim == 2:
            out = out[:, :, None]
        return out

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation.astype(np.uint8), interp=cv2.INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64)
        coords[:, 0] *= self.new_w / self.w
        coords[:, 1] *= self.new_h / self.h
        return coords

    def inverse(self) -> Transform:
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.library)


class CropTransform(_FvcoreCropTransform):
    """fvcore's crop, except that polygons are only shifted, not clipped to the crop window.

    fvcore clips polygons with shapely (an extra dependency) and may split or drop them; detgn keeps
    every vertex and lets rasterisation at the cropped (h, w) clip the mask, which gives the same
    pixels, and the box is clipped to the image in transform_instance_annotations.
    """

    def apply_polygons(self, polygons: list) -> list:
        return [self.apply_coords(np.array(p, dtype=np.float64)) for p in polygons]


class Augmentation:
    """Draws a Transform from `rng` (detectron2's name; fvcore has none). get_transform takes the AugInput
    fields named in `input_args`, then the RandomState: by default get_transform(image, rng)."""

    input_args: Tuple[str, ...] = ("image",)

    def get_transform(self, image: np.ndarray, rng: np.random.RandomState) -> Transform:
        raise NotImplementedError


class AugInput:
    """What the augmentations of one image see and change together: `image` (H, W, C) uint8, `boxes` (N, 4)
    float XYXY in pixels of the current image (None when the caller has none, e.g. at inference) and
    `sem_seg` (H, W) or None. `transform(t)` applies one Transform to all of them;
    `apply_augmentations(augs, rng)` runs augmentations in order, each seeing the fields as the previous
    ones left them, and returns the TransformList that the caller applies to its polygons and masks.

    An augmentation names the fields its get_transform takes in `input_args` (default ("image",)), followed
    by the numpy RandomState it draws from: `input_args = ("image", "boxes")` -> get_transform(image, boxes,
    rng). The boxes here are for deciding (e.g. a crop that keeps an object); the mapper transforms each
    annotation's box and mask itself with the returned transforms.
    """

    def __init__(self, image: np.ndarray, *, boxes: Optional[np.ndarray] = None, sem_seg: Optional[np.ndarray] = None):
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            raise ValueError(f"AugInput.image must be an (H, W) or (H, W, C) numpy array, got {type(image).__name__}")
        self.image = image
        self.boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        """Apply `tfm` to the image and, when present, the boxes and the segmentation (in place)."""
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)

    def apply_augmentations(self, augs: List["Augmentation"], rng: np.random.RandomState) -> TransformList:
        transforms = []
        for aug in augs:
            args = []
            for name in aug.input_args:
                if not hasattr(self, name) or getattr(self, name) is None:
                    raise ValueError(
                        f"{type(aug).__name__} needs the input '{name}', which this AugInput does not have "
                        "(the DatasetMapper gives boxes in training only)"
                    )
                args.append(getattr(self, name))
            t = aug.get_transform(*args, rng)
            if not isinstance(t, Transform):
                raise TypeError(f"{type(aug).__name__}.get_transform returned {type(t).__name__}, not a Transform")
            self.transform(t)
            transforms.append(t)
        return TransformList(transforms)


def _shortest_edge_size(h, w, short, max_size):
    scale = short * 1.0 / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


class ResizeShortestEdge(Augmentation):
    """Resize so the short side is `short_edge_length` (a choice or a [min, max] range), long side <= max_size."""

    def __init__(self, short_edge_length, max_size: int = 10**9, sample_style: str = "range", library: str = "opencv"):
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got '{sample_style}'")
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ConfigValueError(
                f"INPUT.MIN_SIZE_TRAIN must have two values with 'range' sampling, got {short_edge_length}"
            )
        self.short_edge_length = tuple(short_edge_length)
        self.max_size = max_size
        self.is_range = sample_style == "range"
        self.library = library

    def get_transform(self, image, rng):
        h, w = image.shape[:2]
        if self.is_range:
            short = rng.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            short = self.short_edge_length[rng.randint(len(self.short_edge_length))]
        if short == 0:
            return NoOpTransform()
        new_h, new_w = _shortest_edge_size(h, w, short, self.max_size)
        return ResizeTransform(h, w, new_h, new_w, self.library)


class RandomFlip(Augmentation):
    def __init__(self, prob: float = 0.5, horizontal: bool = True, vertical: bool = False):
        if horizontal == vertical:
            raise ValueError("RandomFlip flips either horizontally or vertically")
        self.prob, self.horizontal = prob, horizontal

    def get_transform(self, image, rng):
        h, w = image.shape[:2]
        if rng.rand() < self.prob:
            return HFlipTransform(w) if self.horizontal else VFlipTransform(h)
        return NoOpTransform()


class ResizeScale(Augmentation):
    """Large-scale jitter: scale so the image fits `target` (h, w) times a random factor in [min_scale, max_scale]."""

    def __init__(
        self, min_scale: float, max_scale: float, target_height: int, target_width: int, library: str = "opencv"
    ):
        self.library = library
        self.min_scale, self.max_scale = min_scale, max_scale
        self.target_height, self.target_width = target_height, target_width

    def get_transform(self, image, rng):
        h, w = image.shape[:2]
        factor = rng.uniform(self.min_scale, self.max_scale)
        scale = min(self.target_height * factor / h, self.target_width * factor / w)
        new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        return ResizeTransform(h, w, new_h, new_w, self.library)


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
        crop = CropTransform(x0, y0, min(cw, w), min(ch, h), orig_w=w, orig_h=h)
        pad = PadTransform(
            0,
            0,
            max(cw - w, 0),
            max(ch - h, 0),
            orig_w=min(cw, w),
            orig_h=min(ch, h),
            pad_value=self.pad_value,
            seg_pad_value=0,
        )
        return TransformList([crop, pad])


class RandomCrop(Augmentation):
    """Random crop of a fraction ("relative", "relative_range") or absolute size ("absolute")."""

    def __init__(self, crop_type: str, crop_size):
        if crop_type not in ("relative", "relative_range", "absolute"):
            raise ConfigValueError(f"INPUT.CROP.TYPE must be relative, relative_range or absolute, got '{crop_type}'")
        self.crop_type, self.crop_size = crop_type, crop_size

    def crop_hw(self, h: int, w: int, rng: np.random.RandomState) -> Tuple[int, int]:
        """The crop's (height, width) in pixels for an image of (h, w)."""
        if self.crop_type == "relative":
            return int(h * self.crop_size[0] + 0.5), int(w * self.crop_size[1] + 0.5)
        if self.crop_type == "relative_range":
            fh = self.crop_size[0] + rng.rand() * (1 - self.crop_size[0])
            fw = self.crop_size[1] + rng.rand() * (1 - self.crop_size[1])
            return int(h * fh + 0.5), int(w * fw + 0.5)
        return min(self.crop_size[0], h), min(self.crop_size[1], w)

    def get_transform(self, image, rng):
        h, w = image.shape[:2]
        ch, cw = self.crop_hw(h, w, rng)
        y0 = rng.randint(h - ch + 1)
        x0 = rng.randint(w - cw + 1)
        return CropTransform(x0, y0, cw, ch, orig_w=w, orig_h=h)


class RandomCropWithInstance(Augmentation):
    """A RandomCrop (same crop_type / crop_size) whose window contains the centre of one box drawn at random,
    so that a crop never cuts every object away; with no box, a plain random crop. Sees the boxes (AugInput)."""

    input_args = ("image", "boxes")

    def __init__(self, crop_type: str, crop_size):
        self._crop = RandomCrop(crop_type, crop_size)

    def get_transform(self, image, boxes, rng):
        h, w = image.shape[:2]
        ch, cw = self._crop.crop_hw(h, w, rng)
        if len(boxes) == 0:
            y0, x0 = rng.randint(h - ch + 1), rng.randint(w - cw + 1)
        else:
            box = boxes[rng.randint(len(boxes))]
            # the centre (clamped into the image) lies in [x0, x0 + cw) and [y0, y0 + ch)
            cx = int(np.floor(min(max((box[0] + box[2]) / 2, 0), w - 1)))
            cy = int(np.floor(min(max((box[1] + box[3]) / 2, 0), h - 1)))
            x0 = rng.randint(max(0, cx - cw + 1), min(w - cw, cx) + 1)
            y0 = rng.randint(max(0, cy - ch + 1), min(h - ch, cy) + 1)
        return CropTransform(int(x0), int(y0), cw, ch, orig_w=w, orig_h=h)


def apply_augmentations(augs: List[Augmentation], image: np.ndarray, rng: np.random.RandomState):
    """Apply augmentations that need only the image, in order; returns (new image, TransformList)."""
    aug_input = AugInput(image)
    transforms = aug_input.apply_augmentations(augs, rng)
    return aug_input.image, transforms


def build_augmentation(cfg, is_train: bool) -> List[Augmentation]:
    """ResizeShortestEdge (+ RandomFlip, optional crop) from INPUT.*, or large-scale jitter when INPUT.LSJ.ENABLED."""
    lib = cfg.INPUT.RESIZE_LIBRARY
    if is_train and cfg.INPUT.LSJ.ENABLED:
        size = cfg.INPUT.LSJ.IMAGE_SIZE
        augs = [
            ResizeScale(cfg.INPUT.LSJ.MIN_SCALE, cfg.INPUT.LSJ.MAX_SCALE, size, size, lib),
            FixedSizeCrop((size, size)),
        ]
    elif is_train:
        augs = [
            ResizeShortestEdge(
                cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING, lib
            )
        ]
        if cfg.INPUT.CROP.ENABLED:
            augs.insert(0, RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    else:
        augs = [ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice", lib)]
    if is_train and cfg.INPUT.RANDOM_FLIP != "none":
        if cfg.INPUT.RANDOM_FLIP not in ("horizontal", "vertical"):
            raise ConfigValueError(
                f"INPUT.RANDOM_FLIP must be horizontal, vertical or none, got '{cfg.INPUT.RANDOM_FLIP}'"
            )
        augs.append(
            RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal", vertical=cfg.INPUT.RANDOM_FLIP == "vertical")
        )
    return augs
