"""Deterministic synthetic "shapes" dataset (squares and discs on noise) in COCO format, for tests."""
import json
import os
from typing import Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

__all__ = ["make_shapes_dataset"]

CLASSES = ["square", "disc"]


def make_shapes_dataset(out_dir: str, num_images: int = 8, image_size: Tuple[int, int] = (96, 128), max_shapes: int = 3,
                        seed: int = 0, polygons: bool = True, crowd_every: int = 0) -> Tuple[str, str]:
    """Write `num_images` PNGs and a COCO json to out_dir; returns (json_file, image_root).

    The same arguments always give the same files. Squares are stored as polygons (or RLE when
    polygons=False), discs as RLE; with crowd_every=k every k-th annotation is a crowd.
    """
    rng = np.random.RandomState(seed)
    image_root = os.path.join(out_dir, "images")
    os.makedirs(image_root, exist_ok=True)
    h, w = image_size
    images, anns = [], []
    ann_id = 1
    for i in range(num_images):
        img = (rng.rand(h, w, 3) * 60 + 40).astype(np.uint8)
        for _ in range(rng.randint(1, max_shapes + 1)):
            cls = rng.randint(len(CLASSES))
            size = rng.randint(min(h, w) // 6, min(h, w) // 3)
            x0, y0 = rng.randint(0, w - size), rng.randint(0, h - size)
            color = tuple(int(c) for c in rng.randint(150, 256, size=3))
            mask = np.zeros((h, w), np.uint8)
            if cls == 0:
                cv2.rectangle(img, (x0, y0), (x0 + size - 1, y0 + size - 1), color, -1)
                mask[y0 : y0 + size, x0 : x0 + size] = 1
                seg = [[x0, y0, x0 + size, y0, x0 + size, y0 + size, x0, y0 + size]]
                if not polygons:
                    seg = None
            else:
                c = (x0 + size // 2, y0 + size // 2)
                cv2.circle(img, c, size // 2, color, -1)
                cv2.circle(mask, c, size // 2, 1, -1)
                seg = None
            rle = mask_util.encode(np.asfortranarray(mask))
            if seg is None:
                seg = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
            bbox = mask_util.toBbox(rle).tolist()
            crowd = int(crowd_every > 0 and ann_id % crowd_every == 0)
            anns.append({"id": ann_id, "image_id": i + 1, "category_id": cls + 1, "bbox": bbox,
                         "area": float(mask_util.area(rle)), "iscrowd": crowd, "segmentation": seg})
            ann_id += 1
        name = f"shape_{i:04d}.png"
        cv2.imwrite(os.path.join(image_root, name), img)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]}
    json_file = os.path.join(out_dir, "shapes.json")
    with open(json_file, "w") as f:
        json.dump(data, f)
    return json_file, image_root
