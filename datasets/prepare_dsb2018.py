#!/usr/bin/env python
"""Convert the Kaggle Data Science Bowl 2018 stage-1 training layout to COCO instance json.

Input layout (any copy of stage1_train):  SRC/<id>/images/<id>.png  and  SRC/<id>/masks/*.png
(one binary PNG per nucleus). Output:

    OUT/train/<id>.png, OUT/val/<id>.png          RGB images (alpha dropped)
    OUT/annotations/{train,val}.json              COCO instances, category "nucleus" (id 1),
                                                  masks as compressed RLE (or --polygons)

The split is a seeded shuffle of the ids whose longer side is at most --max-side.

    python datasets/prepare_dsb2018.py --src /path/to/stage1_train --out datasets/nuclei_mini \
        --num-train 40 --num-val 12 --seed 0 --max-side 700
"""

import argparse
import json
import os
import random
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_util


def _read_mask(path):
    m = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise IOError(f"Cannot read mask {path}")
    return m > 127


def _polygons(mask):
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polys = []
    for c in contours:
        c = c.reshape(-1, 2).astype(np.float64) + 0.5  # pixel centres
        if len(c) >= 3:
            polys.append(c.reshape(-1).round(2).tolist())
    return polys


def convert_image(src_dir, image_id, out_img_dir, coco_image_id, ann_id_start, use_polygons):
    img_path = os.path.join(src_dir, image_id, "images", image_id + ".png")
    img = cv2.imread(img_path, cv2.IMREAD_COLOR)  # drops alpha; BGR
    if img is None:
        raise IOError(f"Cannot read image {img_path}")
    h, w = img.shape[:2]
    os.makedirs(out_img_dir, exist_ok=True)
    file_name = image_id + ".png"
    cv2.imwrite(os.path.join(out_img_dir, file_name), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    anns = []
    mask_dir = os.path.join(src_dir, image_id, "masks")
    ann_id = ann_id_start
    for mname in sorted(os.listdir(mask_dir)):
        if not mname.endswith(".png"):
            continue
        m = _read_mask(os.path.join(mask_dir, mname))
        if m.shape != (h, w):
            raise ValueError(f"Mask {mname} of {image_id} is {m.shape}, image is {(h, w)}")
        if not m.any():
            continue
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        x, y, bw, bh = mask_util.toBbox(rle).tolist()
        area = float(mask_util.area(rle))
        if use_polygons:
            seg = _polygons(m)
            if not seg:
                continue
        else:
            seg = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
        anns.append(
            {
                "id": ann_id,
                "image_id": coco_image_id,
                "category_id": 1,
                "bbox": [x, y, bw, bh],
                "area": area,
                "iscrowd": 0,
                "segmentation": seg,
            }
        )
        ann_id += 1
    image = {"id": coco_image_id, "file_name": file_name, "height": h, "width": w, "dsb2018_id": image_id}
    return image, anns


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True, help="the stage1_train folder")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--num-train", type=int, default=40, help="training images (0 = all remaining)")
    ap.add_argument("--num-val", type=int, default=12, help="validation images")
    ap.add_argument("--seed", type=int, default=0, help="shuffle seed of the split")
    ap.add_argument(
        "--max-side", type=int, default=700, help="skip images whose longer side exceeds this (0 = keep all)"
    )
    ap.add_argument("--polygons", action="store_true", help="store polygons instead of RLE")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.src):
        sys.exit(f"error: {args.src} is not a folder (expected the DSB 2018 stage1_train layout)")
    ids = sorted(d for d in os.listdir(args.src) if os.path.isdir(os.path.join(args.src, d, "images")))
    if not ids:
        sys.exit(f"error: no <id>/images/<id>.png found under {args.src}")
    keep = []
    for i in ids:
        img = cv2.imread(os.path.join(args.src, i, "images", i + ".png"), cv2.IMREAD_UNCHANGED)
        if img is None:
            print(f"warning: skipping unreadable image of {i}", file=sys.stderr)
            continue
        if args.max_side and max(img.shape[:2]) > args.max_side:
            continue
        keep.append(i)
    random.Random(args.seed).shuffle(keep)
    val_ids = sorted(keep[: args.num_val])
    rest = keep[args.num_val :]
    train_ids = sorted(rest if args.num_train == 0 else rest[: args.num_train])
    categories = [{"id": 1, "name": "nucleus", "supercategory": "cell"}]
    os.makedirs(os.path.join(args.out, "annotations"), exist_ok=True)
    ann_id = 1
    for split, split_ids in (("train", train_ids), ("val", val_ids)):
        images, annotations = [], []
        for k, i in enumerate(split_ids):
            image, anns = convert_image(args.src, i, os.path.join(args.out, split), k + 1, ann_id, args.polygons)
            images.append(image)
            annotations.extend(anns)
            ann_id += len(anns)
        coco = {
            "info": {"description": f"DSB 2018 stage1_train nuclei, {split} split (seed {args.seed})"},
            "licenses": [{"id": 1, "name": "CC0 1.0"}],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        with open(os.path.join(args.out, "annotations", f"{split}.json"), "w") as f:
            json.dump(coco, f)
        print(f"{split}: {len(images)} images, {len(annotations)} instances")


if __name__ == "__main__":
    main()
