"""hotcoco gives pycocotools' 12 summary numbers and per-class precision table to the last bit; faster-coco-eval
differs from both by an ulp in places (1.0 where pycocotools' cumulative sums give 0.9999999999999998, and a summary
number off in its last digit), on constructed data that exercises every rule: crowd regions, the three area
ranges, more detections than maxDets, categories without ground truth, images without detections, a subset of
images; and hotcoco's LVIS mode gives the `lvis` package's numbers (federated negatives, not-exhaustive categories,
the 300-per-image cap, rare / common / frequent)."""

import contextlib
import copy
import io
import random

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from detgn.evaluation.coco_evaluation import evaluate_predictions_on_coco


def _rle(h, w, x, y, bw, bh):
    m = np.zeros((h, w), np.uint8, order="F")
    m[int(y) : int(y + bh), int(x) : int(x + bw)] = 1
    r = mask_util.encode(m)
    return {"size": [h, w], "counts": r["counts"].decode()}


def synthetic(seed, num_images=12, num_cats=5, crowd_rate=0.1, max_dets=150, lvis=False):
    """Ground truth and results: objects of all three area ranges (4x4 .. 200x200 px), some crowd (COCO), categories
    without ground truth, images without results, images with `max_dets` results (> 100)."""
    rng = random.Random(seed)
    h, w = 240, 320
    images, anns, results = [], [], []
    aid = 1
    for i in range(1, num_images + 1):
        image = {"id": i, "file_name": f"{i}.jpg", "height": h, "width": w}
        present = set()
        objects = []
        for _ in range(rng.randint(0, 8)):
            side = rng.choice([6, 20, 45, 120, 200])  # small < 32^2 <= medium < 96^2 <= large
            bw, bh = side * rng.uniform(0.7, 1.0), side * rng.uniform(0.7, 1.0)
            x, y = rng.uniform(0, w - bw - 1), rng.uniform(0, h - bh - 1)
            cat = rng.randint(1, num_cats - 1)  # the last category never has ground truth
            crowd = int(not lvis and rng.random() < crowd_rate)
            anns.append(
                {"id": aid, "image_id": i, "category_id": cat, "bbox": [x, y, bw, bh], "area": bw * bh,
                 "iscrowd": crowd, "segmentation": _rle(h, w, x, y, bw, bh)}
            )  # fmt: skip
            aid += 1
            present.add(cat)
            objects.append((x, y, bw, bh, cat))
        if lvis:
            others = [c for c in range(1, num_cats + 1) if c not in present]
            rng.shuffle(others)
            image["neg_category_ids"] = others[:2]
            image["not_exhaustive_category_ids"] = sorted(present)[:1] if rng.random() < 0.3 else []
            image["coco_url"] = f"http://x/val2017/{i}.jpg"
        images.append(image)
        n = 0 if i % 5 == 0 else (max_dets if i % 4 == 0 else rng.randint(1, 30))
        for k in range(n):
            if objects and k < 2 * len(objects):
                x, y, bw, bh, cat = objects[k % len(objects)]
                x, y = max(0.0, x + rng.gauss(0, 3)), max(0.0, y + rng.gauss(0, 3))
                bw, bh = bw * rng.uniform(0.8, 1.2), bh * rng.uniform(0.8, 1.2)
                if rng.random() < 0.2:
                    cat = rng.randint(1, num_cats)
            else:
                bw, bh = rng.uniform(4, 150), rng.uniform(4, 150)
                x, y, cat = rng.uniform(0, w - bw), rng.uniform(0, h - bh), rng.randint(1, num_cats)
            bw, bh = min(bw, w - x - 1), min(bh, h - y - 1)
            results.append(
                {"image_id": i, "category_id": cat, "score": round(rng.random(), 3), "bbox": [x, y, bw, bh],
                 "segmentation": _rle(h, w, x, y, bw, bh)}
            )  # fmt: skip
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, num_cats + 1)]
    if lvis:
        for c in cats:
            c["frequency"] = "rcf"[c["id"] % 3]
    return {"images": images, "annotations": anns, "categories": cats}, results


def _gt(data):
    gt = COCO()
    gt.dataset = copy.deepcopy(data)
    gt.createIndex()
    return gt


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_backends_agree_bit_for_bit(seed, iou_type):
    data, results = synthetic(seed)
    assert any(a["iscrowd"] for a in data["annotations"])
    runs = {}
    before = copy.deepcopy(results)
    for backend in ("pycocotools", "faster_coco_eval", "hotcoco"):
        gt = _gt(data)
        for img_ids in (None, [1, 2, 3, 4, 5, 6]):
            ev = evaluate_predictions_on_coco(gt, results, iou_type, img_ids=img_ids, backend=backend)
            runs[backend, str(img_ids)] = (
                [float(s) for s in ev.stats],
                np.asarray(ev.eval["precision"]),
            )
    assert results == before  # the caller's results are not changed by any backend
    for key in ("None", str([1, 2, 3, 4, 5, 6])):
        ref_stats, ref_precision = runs["pycocotools", key]
        assert -1.0 in ref_stats or min(ref_stats) >= 0  # (undefined metrics are -1 in every backend alike)
        for backend in ("faster_coco_eval", "hotcoco"):
            stats, precision = runs[backend, key]
            if backend == "hotcoco":
                assert stats == ref_stats, key
                assert np.array_equal(precision, ref_precision), key
            else:
                assert stats == pytest.approx(ref_stats, rel=1e-14, abs=1e-15), key
                assert np.abs(precision - ref_precision).max() <= 4.5e-16, key


def test_hotcoco_lvis_equals_the_lvis_package():
    import hotcoco

    from tests.evaluation.lvis_reference import reference_lvis, reference_results

    reference_lvis()
    for seed in (0, 1):
        data, results = synthetic(seed, num_images=15, num_cats=6, max_dets=320, lvis=True)
        for iou_type in ("bbox", "segm"):
            res = [dict(r) for r in results]
            if iou_type == "segm":
                for r in res:
                    r.pop("bbox")
            want = reference_results(data, res, iou_type)
            gt = hotcoco.LVIS(copy.deepcopy(data))
            ev = hotcoco.LVISeval(gt, hotcoco.LVISResults(gt, copy.deepcopy(res), max_dets=300), iou_type)
            with contextlib.redirect_stdout(io.StringIO()):
                ev.run()
            got = ev.get_results()
            for k, v in want.items():
                assert got[k] == float(v), (seed, iou_type, k, got[k], v)
