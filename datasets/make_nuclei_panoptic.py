"""Make datasets/nuclei_panoptic/: a COCO panoptic version of the bundled nuclei_mini images (DSB 2018, CC0).

Things: the nuclei of nuclei_mini's instance json (category 1 "nucleus"); where two nuclei overlap, the pixel
stays with the one of lower annotation id (panoptic segments do not overlap). Stuff, derived from each image
by a fixed rule (a Gaussian blur of sigma 4 px of the gray image, `blurred`):
  - dark-field images (median gray < 100, fluorescence): "tissue" where blurred >= its 10th percentile + 8 (signal
    above the dark floor), "background" elsewhere;
  - bright-field images (stained slides): "tissue" where blurred <= 215, "background" (bare glass) elsewhere;
nucleus pixels are never stuff. Categories: 1 nucleus (thing), 2 tissue, 3 background (stuff).

    python datasets/make_nuclei_panoptic.py [--out datasets/nuclei_panoptic]

writes panoptic_{train,val}.json, panoptic_{train,val}/*.png (COCO panoptic: id = R + 256 G + 256^2 B) and the
semantic PNGs semantic_{train,val}/ (python -m detgn.data.prepare_panoptic). The output is the same on every run.
It refuses to write into an existing folder unless --overwrite is given.
"""

import argparse
import json
import os
import shutil
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

CATEGORIES = [
    {"id": 1, "name": "nucleus", "supercategory": "cell", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "tissue", "supercategory": "stuff", "isthing": 0, "color": [60, 140, 60]},
    {"id": 3, "name": "background", "supercategory": "stuff", "isthing": 0, "color": [70, 70, 90]},
]


def tissue_mask(image_bgr: np.ndarray) -> np.ndarray:
    """(H, W) bool: the rule of the module docstring."""
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    blurred = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 4)
    if np.median(gray) < 100:
        return blurred >= np.percentile(blurred, 10) + 8
    return blurred <= 215


def _bbox(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def make_split(src_root: str, split: str, out: str) -> dict:
    from detgn.evaluation.panoptic_evaluation import id2rgb

    with open(os.path.join(src_root, "annotations", f"{split}.json")) as f:
        inst = json.load(f)
    anns = {}
    for a in sorted(inst["annotations"], key=lambda a: a["id"]):
        anns.setdefault(a["image_id"], []).append(a)
    png_dir = os.path.join(out, f"panoptic_{split}")
    os.makedirs(png_dir)
    annotations, counts = [], {"images": 0, "nuclei": 0, "tissue": 0, "background": 0}
    for im in sorted(inst["images"], key=lambda im: im["id"]):
        h, w = im["height"], im["width"]
        image = cv2.imread(os.path.join(src_root, split, im["file_name"]), cv2.IMREAD_COLOR)
        ids = np.zeros((h, w), np.uint32)
        segments = []
        for a in anns.get(im["id"], []):
            if a.get("iscrowd", 0):
                continue
            seg = a["segmentation"]
            rle = mask_util.frPyObjects(seg, h, w) if isinstance(seg, list) else seg
            if isinstance(rle, list):
                rle = mask_util.merge(rle)
            if isinstance(rle.get("counts"), str):
                rle = dict(rle, counts=rle["counts"].encode())
            m = mask_util.decode(rle).astype(bool) & (ids == 0)
            if not m.any():
                continue
            sid = len(segments) + 1
            ids[m] = sid
            segments.append({"id": sid, "category_id": 1, "iscrowd": 0, "area": int(m.sum()), "bbox": _bbox(m)})
        tissue = tissue_mask(image)
        for cat, m in ((2, tissue & (ids == 0)), (3, ~tissue & (ids == 0))):
            if m.any():
                sid = len(segments) + 1
                ids[m] = sid
                segments.append({"id": sid, "category_id": cat, "iscrowd": 0, "area": int(m.sum()), "bbox": _bbox(m)})
                counts["tissue" if cat == 2 else "background"] += 1
        counts["nuclei"] += sum(1 for s in segments if s["category_id"] == 1)
        counts["images"] += 1
        name = os.path.splitext(im["file_name"])[0] + ".png"
        Image.fromarray(id2rgb(ids)).save(os.path.join(png_dir, name))
        annotations.append({"image_id": im["id"], "file_name": name, "segments_info": segments})
    images = [{k: im[k] for k in ("id", "file_name", "height", "width")} for im in inst["images"]]
    with open(os.path.join(out, f"panoptic_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=os.path.join(HERE, "nuclei_mini"))
    ap.add_argument("--out", default=os.path.join(HERE, "nuclei_panoptic"))
    ap.add_argument("--overwrite", action="store_true", help="replace the generated files in an existing --out")
    args = ap.parse_args(argv)
    generated = [f"{kind}_{s}" for kind in ("panoptic", "semantic") for s in ("train", "val")]
    if os.path.exists(args.out):
        if not args.overwrite:
            print(f"error: {args.out} exists; pass --overwrite to make it again", file=sys.stderr)
            return 2
        for g in generated:
            shutil.rmtree(os.path.join(args.out, g), ignore_errors=True)
            if os.path.exists(os.path.join(args.out, g + ".json")):
                os.remove(os.path.join(args.out, g + ".json"))
    os.makedirs(args.out, exist_ok=True)
    from detgn.data.prepare_panoptic import prepare

    for split in ("train", "val"):
        counts = make_split(args.src, split, args.out)
        prepare(
            os.path.join(args.out, f"panoptic_{split}.json"),
            os.path.join(args.out, f"panoptic_{split}"),
            os.path.join(args.out, f"semantic_{split}"),
            workers=1,
        )
        print(f"{split}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
