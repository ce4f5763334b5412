"""Ground-truth and results files checked before pycocotools sees them.

pycocotools trusts its input: a missing key is a KeyError deep inside it, a NaN score or box silently
changes AP, and a malformed RLE decodes into uninitialised memory (a different mask every call). These
checks refuse such files with one line naming the file, the entry and the fix.
"""

import contextlib
import io
import math
from typing import Dict, Sequence

import numpy as np

from detgn.structures.rle import rle_problem, rle_strings_ok
from detgn.utils.errors import UserInputError, short_repr

__all__ = ["CocoInputError", "load_checked_coco_gt", "check_results"]


class CocoInputError(UserInputError, ValueError):
    """A ground-truth or results file that COCOeval would misread."""


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_gt_fields(json_file: str, i: int, ann: dict) -> None:
    """The fields COCOeval computes with, where present: bbox 4 finite numbers with width, height >= 0, area a finite
    number >= 0, iscrowd 0 or 1. In ground truth a bad one is refused (skipping it would change AP)."""
    where = f"{json_file}: annotations[{i}] (id {ann['id']})"
    b = ann.get("bbox")
    if "bbox" in ann and not (
        isinstance(b, list) and len(b) == 4 and all(_finite(v) for v in b) and b[2] >= 0 and b[3] >= 0
    ):
        raise CocoInputError(
            f"{where}: 'bbox' = {short_repr(b, 60)} is not [x, y, width, height] of finite numbers with width, "
            "height >= 0"
        )
    if "area" in ann and not (_finite(ann["area"]) and ann["area"] >= 0):
        raise CocoInputError(f"{where}: 'area' = {short_repr(ann['area'], 60)} is not a finite number >= 0")
    if "iscrowd" in ann and not (type(ann["iscrowd"]) in (int, bool) and ann["iscrowd"] in (0, 1)):
        raise CocoInputError(f"{where}: 'iscrowd' = {short_repr(ann['iscrowd'], 60)} is not 0 or 1")
    seg = ann.get("segmentation")
    if seg is not None and not isinstance(seg, (dict, list)):
        raise CocoInputError(
            f"{where}: 'segmentation' is {type(seg).__name__}; expected polygons (a list) or an RLE (an object)"
        )


def load_checked_coco_gt(json_file: str):
    """pycocotools COCO of `json_file`, after its structure (detgn.data.datasets.coco.check_coco_structure)
    and every RLE segmentation were checked."""
    from pycocotools.coco import COCO

    from detgn.data.datasets.coco import _read_json, check_coco_structure

    data = _read_json(json_file)
    check_coco_structure(json_file, data)
    images = {img["id"]: img for img in data["images"]}
    for i, ann in enumerate(data["annotations"]):
        _check_gt_fields(json_file, i, ann)
        seg = ann.get("segmentation")
        img = images.get(ann["image_id"])
        if isinstance(seg, dict) and img is not None:
            why = rle_problem(seg, img.get("height", -1), img.get("width", -1))
            if why:
                raise CocoInputError(
                    f"{json_file}: annotations[{i}] (id {ann['id']}): {why}; fix or drop this annotation"
                )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


def check_results(results: Sequence[Dict], coco_gt, iou_type: str, source: str = "results") -> None:
    """Each result: an object with a known image_id and category_id, a finite score, and for bbox 4 finite
    numbers [x, y, w, h] with w, h >= 0, for segm an RLE of its image's size. CocoInputError names the first bad one.
    Compressed RLE strings are checked together (rle_strings_ok) after the other fields."""
    strings, pixels, owners, at = [], [], [], [0]
    first_error = None
    try:
        _check_result_fields(results, coco_gt, iou_type, source, strings, pixels, owners, at)
    except CocoInputError as e:
        first_error = e
    ok = rle_strings_ok(strings, pixels)
    if not ok.all():
        i = owners[int(np.argmin(ok))]
        if first_error is None or i < at[0]:
            r = results[i]
            img = coco_gt.imgs[r["image_id"]]
            why = rle_problem(r["segmentation"], img.get("height", -1), img.get("width", -1))
            raise CocoInputError(f"{source}: result {i} (image_id {r['image_id']}): segmentation: {why}")
    if first_error is not None:
        raise first_error


def _check_result_fields(results, coco_gt, iou_type, source, strings, pixels, owners, at) -> None:
    """check_results but for compressed RLE strings, which are appended to strings / pixels / owners; at[0] is the
    index of the result being checked (of the bad one when it raises)."""
    for i, r in enumerate(results):
        at[0] = i
        where = f"{source}: result {i}"
        if not isinstance(r, dict):
            raise CocoInputError(
                f"{where} is a {type(r).__name__}, not an object with image_id, category_id, score, bbox/segmentation"
            )
        for key in ("image_id", "category_id", "score") + (("bbox",) if iou_type == "bbox" else ("segmentation",)):
            if key not in r:
                raise CocoInputError(
                    f"{where} has no '{key}'; every result needs image_id, category_id, score and "
                    f"{'bbox' if iou_type == 'bbox' else 'segmentation'}"
                )
        for key in ("image_id", "category_id"):
            v = r[key]
            if not isinstance(v, int) or isinstance(v, bool):
                raise CocoInputError(
                    f"{where}: {key} {short_repr(v)} is a {type(v).__name__}, not an integer id of the ground truth"
                )
        if r["image_id"] not in coco_gt.imgs:
            raise CocoInputError(
                f"{where}: image_id {r['image_id']} is not an image of the ground truth; results must use its image ids"
            )
        if r["category_id"] not in coco_gt.cats:
            raise CocoInputError(
                f"{where}: category_id {r['category_id']} is not a category of the ground truth "
                f"(known: {sorted(coco_gt.cats)[:10]})"
            )
        if not _finite(r["score"]):
            raise CocoInputError(f"{where}: score {short_repr(r['score'])} is not a finite number")
        if iou_type == "bbox":
            b = r["bbox"]
            if (
                not isinstance(b, (list, tuple))
                or len(b) != 4
                or not all(_finite(v) for v in b)
                or b[2] < 0
                or b[3] < 0
            ):
                raise CocoInputError(
                    f"{where}: bbox {short_repr(b)} is not [x, y, width, height] with finite numbers and width, height >= 0"
                )
        else:
            img = coco_gt.imgs[r["image_id"]]
            if not isinstance(r["segmentation"], dict):
                raise CocoInputError(
                    f"{where}: segmentation is a {type(r['segmentation']).__name__}, not an RLE object "
                    "{'size': [h, w], 'counts': ...}"
                )
            seg = r["segmentation"]
            h, w = img.get("height", -1), img.get("width", -1)
            if isinstance(seg.get("counts"), (str, bytes)) and seg.get("size") == [h, w]:
                strings.append(seg["counts"])
                pixels.append(h * w)
                owners.append(i)
                continue
            why = rle_problem(seg, h, w)
            if why:
                raise CocoInputError(f"{where} (image_id {r['image_id']}): segmentation: {why}")
