"""A small image-classification dataset cut from a detection dataset: ImageFolder class folders of
square crops centred on annotated objects (one folder per category) and crops of background that
overlap no object ("background"). Used to try tools/train_classifier.py on the bundled nuclei data
(tools/make_crop_dataset.py) and by its tests.
"""

import os
from typing import Dict, List

import cv2
import numpy as np

from detgn.structures import BoxMode
from detgn.utils.errors import UserInputError

__all__ = ["write_crop_folders", "OutputExistsError"]


class OutputExistsError(UserInputError, FileExistsError):
    """The output folder holds a previous run's files."""


def _square(cx, cy, side, w, h):
    side = int(min(max(side, 8), w, h))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, side


def _overlap(x0, y0, side, boxes) -> float:
    """Largest fraction of the crop covered by one box."""
    if len(boxes) == 0:
        return 0.0
    ix = np.clip(np.minimum(boxes[:, 2], x0 + side) - np.maximum(boxes[:, 0], x0), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], y0 + side) - np.maximum(boxes[:, 1], y0), 0, None)
    return float((ix * iy).max() / (side * side))


def write_crop_folders(
    dicts: List[Dict],
    class_names: List[str],
    out_root: str,
    size: int = 64,
    per_image: int = 10,
    context: float = 1.5,
    seed: int = 0,
    overwrite: bool = False,
) -> Dict[str, int]:
    """Write `out_root/<class>/<image stem>_<k>.png` crops (size x size pixels) and return {class: count}.

    Per image: up to `per_image` objects (crop side = context x the box's longer side, at least 8 px),
    and as many background crops of the same sides placed where no box covers more than 5% of them
    (fewer when the image has no such place). Deterministic for a seed. A folder that already holds files is
    refused (OutputExistsError) unless `overwrite`: crops of another run would be mixed with these.
    """
    rng = np.random.RandomState(seed)
    counts = {name: 0 for name in list(class_names) + ["background"]}
    if not overwrite and os.path.isdir(out_root):
        held = [n for n in counts if os.path.isdir(os.path.join(out_root, n)) and os.listdir(os.path.join(out_root, n))]
        if held:
            raise OutputExistsError(
                f"{out_root} already holds crops ({', '.join(held[:3])}); give another output folder, or overwrite "
                "(--overwrite) to replace them"
            )
    for name in counts:
        os.makedirs(os.path.join(out_root, name), exist_ok=True)
    for d in dicts:
        image = cv2.imread(d["file_name"], cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"Cannot read image {d['file_name']}")
        h, w = image.shape[:2]
        annos = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        boxes = np.array(
            [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos], dtype=np.float64
        ).reshape(-1, 4)
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0][:16]
        picked = rng.permutation(len(annos))[:per_image]
        sides = []
        for k, i in enumerate(picked):
            x0, y0, x1, y1 = boxes[i]
            x, y, side = _square((x0 + x1) / 2, (y0 + y1) / 2, context * max(x1 - x0, y1 - y0), w, h)
            name = class_names[annos[i]["category_id"]]
            crop = cv2.resize(image[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
            cv2.imwrite(os.path.join(out_root, name, f"{stem}_{k}.png"), crop)
            counts[name] += 1
            sides.append(side)
        for k, side in enumerate(sides):
            for _ in range(50):
                x, y, side_ = _square(rng.uniform(0, w), rng.uniform(0, h), side, w, h)
                if _overlap(x, y, side_, boxes) <= 0.05:
                    crop = cv2.resize(image[y : y + side_, x : x + side_], (size, size), interpolation=cv2.INTER_AREA)
                    cv2.imwrite(os.path.join(out_root, "background", f"{stem}_{k}.png"), crop)
                    counts["background"] += 1
                    break
    return counts
