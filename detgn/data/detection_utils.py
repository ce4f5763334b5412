"""Reading images and turning dataset annotations into training Instances."""

from typing import Dict, List, Optional

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image, ImageOps

from detgn.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks
from detgn.utils.errors import ConfigValueError, UserInputError

from .errors import DatasetFormatError, DatasetNotFoundError

__all__ = [
    "read_image",
    "ImageReadError",
    "SizeMismatchError",
    "check_image_size",
    "transform_instance_annotations",
    "annotations_to_instances",
    "record_ground_truth",
]


class ImageReadError(UserInputError, IOError):
    """An image file is missing or cannot be decoded."""


class SizeMismatchError(UserInputError, ValueError):
    """The image file's size differs from the height/width recorded in the dataset."""


def read_image(file_name: str, format: str = "BGR") -> np.ndarray:
    """Read an image with its EXIF orientation applied -> (H, W, 3) uint8 in `format` ("BGR", "RGB", "L").

    16-bit (and 32-bit / float) grayscale images are mapped to 8 bits by their own value range
    (min -> 0, max -> 255), then replicated to 3 channels."""
    try:
        with open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()
    except FileNotFoundError as e:
        raise ImageReadError(f"Image file not found: {file_name}") from e
    except Exception as e:  # PIL raises many types for corrupt files
        raise ImageReadError(f"Cannot decode image {file_name}: {e}") from e
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = Image.fromarray(_stretch_to_uint8(np.asarray(image)), mode="L")
    if format == "L":
        return np.asarray(image.convert("L"))[:, :, None]
    arr = np.asarray(image.convert("RGB"))
    if format == "BGR":
        arr = arr[:, :, ::-1]
    elif format != "RGB":
        raise ValueError(f"Unknown image format '{format}'; use BGR, RGB or L")
    return np.ascontiguousarray(arr)


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit / 32-bit / float single-channel pixels -> uint8 by the image's own value range:
    min -> 0, max -> 255, linear in between (a constant image becomes 0). A plain cast would
    saturate every value above 255 (most of a 16-bit microscopy image) to white."""
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(v.shape, np.uint8)
    lo, hi = v[finite].min(), v[finite].max()
    if hi <= lo:
        return np.zeros(v.shape, np.uint8)
    out = np.where(finite, (v - lo) * (255.0 / (hi - lo)), 0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def check_image_size(dataset_dict: Dict, image: np.ndarray) -> None:
    """Raise SizeMismatchError when the decoded image disagrees with the dataset's height/width."""
    h, w = image.shape[:2]
    if "height" in dataset_dict and "width" in dataset_dict:
        if (dataset_dict["height"], dataset_dict["width"]) != (h, w):
            raise SizeMismatchError(
                f"Image {dataset_dict.get('file_name')} (image id {dataset_dict.get('image_id')}) is {h}x{w} (h x w) but the "
                f"annotation file says {dataset_dict['height']}x{dataset_dict['width']}; fix the json or the image"
            )
    else:
        dataset_dict["height"], dataset_dict["width"] = h, w


def read_sem_seg(path: str, dataset_dict: Dict) -> np.ndarray:
    """(H, W) uint8/uint16 labels of a semantic PNG, checked against the record's height and width."""
    labels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise DatasetNotFoundError(
            f"Semantic label PNG missing or unreadable: {path} (image id {dataset_dict.get('image_id')}); make it "
            "with python -m detgn.data.prepare_panoptic"
        )
    if labels.ndim != 2:
        raise DatasetFormatError(f"{path}: a semantic label PNG has one channel, this one has {labels.shape[2]}")
    if labels.shape != (dataset_dict["height"], dataset_dict["width"]):
        raise SizeMismatchError(
            f"Semantic labels {path} are {labels.shape[0]}x{labels.shape[1]} (h x w) but image id "
            f"{dataset_dict.get('image_id')} is {dataset_dict['height']}x{dataset_dict['width']}; remake them"
        )
    return labels


def transform_sem_seg(transforms, sem_seg: np.ndarray, ignore_value: int) -> np.ndarray:
    """Apply the image's transforms to a label map (nearest neighbour); padding gets `ignore_value`, not the
    0 that bit masks are padded with."""
    from fvcore.transforms.transform import PadTransform

    for t in getattr(transforms, "transforms", [transforms]):
        if isinstance(t, PadTransform):
            t = PadTransform(t.x0, t.y0, t.x1, t.y1, t.orig_w, t.orig_h, t.pad_value, seg_pad_value=ignore_value)
        sem_seg = t.apply_segmentation(sem_seg)
    return sem_seg


def transform_instance_annotations(annotation: Dict, transforms, image_size) -> Dict:
    """Apply `transforms` to one annotation's bbox (-> XYXY_ABS, clipped) and segmentation."""
    bbox = BoxMode.convert(annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS)
    bbox = transforms.apply_box(np.array([bbox]))[0].clip(min=0)
    h, w = image_size
    bbox = np.minimum(bbox, [w, h, w, h])
    annotation = dict(annotation)
    annotation["bbox"] = bbox
    annotation["bbox_mode"] = BoxMode.XYXY_ABS
    seg = annotation.get("segmentation")
    if seg is not None:
        if isinstance(seg, list):
            polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg]
            annotation["segmentation"] = [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
        elif isinstance(seg, dict):
            m = mask_util.decode(
                seg if not isinstance(seg["counts"], list) else mask_util.frPyObjects(seg, *seg["size"])
            )
            annotation["segmentation"] = transforms.apply_segmentation(m.astype(np.uint8))
        elif isinstance(seg, np.ndarray):
            annotation["segmentation"] = transforms.apply_segmentation(seg.astype(np.uint8))
        else:
            raise ValueError(f"Unsupported segmentation type {type(seg)}")
    return annotation


def annotations_to_instances(annos: List[Dict], image_size, mask_format: str = "polygon") -> Instances:
    """Transformed annotations -> Instances(gt_boxes, gt_classes[, gt_masks]) for an image of (h, w)."""
    target = Instances(image_size)
    boxes = np.array([a["bbox"] for a in annos], dtype=np.float32).reshape(-1, 4)
    target.gt_boxes = Boxes(torch.from_numpy(boxes))
    target.gt_classes = torch.tensor([int(a["category_id"]) for a in annos], dtype=torch.int64)
    if len(annos) and "segmentation" in annos[0]:
        segms = [a["segmentation"] for a in annos]
        h, w = image_size
        if mask_format == "polygon":
            polys = []
            for s in segms:
                if isinstance(s, list):
                    polys.append([np.asarray(p, dtype=np.float64) for p in s])
                else:  # a bit mask cannot be a polygon: fall back to bitmasks for the whole image
                    return _with_bitmasks(target, segms, h, w)
            target.gt_masks = PolygonMasks(polys)
        elif mask_format == "bitmask":
            return _with_bitmasks(target, segms, h, w)
        else:
            raise ConfigValueError(f"INPUT.MASK_FORMAT must be polygon or bitmask, got '{mask_format}'")
    return target


def record_ground_truth(record: Dict, image_size) -> Optional[Instances]:
    """The non-crowd annotations of a dataset record as Instances(gt_boxes in XYXY pixels, gt_classes, gt_masks as
    bitmasks) on an image of (h, w), untransformed; None when the record has no "annotations" (for drawing)."""
    from fvcore.transforms import NoOpTransform

    if "annotations" not in record:
        return None
    annos = [
        transform_instance_annotations(a, NoOpTransform(), image_size)  # any box mode -> XYXY pixels
        for a in record["annotations"]
        if not a.get("iscrowd", 0)
    ]
    return annotations_to_instances(annos, image_size, mask_format="bitmask")


def _with_bitmasks(target, segms, h, w):
    from detgn.structures.masks import polygons_to_bitmask

    masks = []
    for s in segms:
        if isinstance(s, list):
            masks.append(polygons_to_bitmask(s, h, w))
        else:
            masks.append(np.asarray(s).astype(bool))
    target.gt_masks = BitMasks(torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w, dtype=torch.bool))
    return target
