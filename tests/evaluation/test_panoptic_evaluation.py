"""PQ / SQ / RQ on constructed cases, each value computed by hand with panopticapi's rules (evaluation.py of
cocodataset/panopticapi), through detgn's wrapper of hotcoco and through COCOPanopticEvaluator."""

import json
import math
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from detgn.data.catalog import DatasetCatalog, MetadataCatalog
from detgn.evaluation.panoptic_evaluation import (
    COCOPanopticEvaluator,
    PanopticInputError,
    evaluate_panoptic,
    id2rgb,
    rgb2id,
)

# categories 1, 2 are things, 3 is stuff
CATS = [
    {"id": 1, "name": "a", "isthing": 1},
    {"id": 2, "name": "b", "isthing": 1},
    {"id": 3, "name": "s", "isthing": 0},
]


def _row(s):
    return [[int(c) for c in s]]


def _score(tmp_path, images):
    """images: [(gt ids, [(id, category, iscrowd[, json area])], pred ids, [(id, category)])] -> evaluate_panoptic."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(exist_ok=True)
    pred_dir.mkdir(exist_ok=True)
    gt = {"images": [], "annotations": [], "categories": CATS}
    preds = []
    for i, (g, gsegs, p, psegs) in enumerate(images):
        g, p = np.asarray(g, np.uint32), np.asarray(p, np.uint32)
        Image.fromarray(id2rgb(g)).save(gt_dir / f"{i}.png")
        Image.fromarray(id2rgb(p)).save(pred_dir / f"{i}.png")
        gt["images"].append({"id": i, "file_name": f"{i}.jpg", "height": g.shape[0], "width": g.shape[1]})
        segs = [
            {"id": s[0], "category_id": s[1], "iscrowd": s[2], "area": s[3] if len(s) > 3 else int((g == s[0]).sum())}
            for s in gsegs
        ]
        gt["annotations"].append({"image_id": i, "file_name": f"{i}.png", "segments_info": segs})
        preds.append(
            {"image_id": i, "file_name": f"{i}.png", "segments_info": [{"id": s, "category_id": c} for s, c in psegs]}
        )
    return evaluate_panoptic(gt, preds, str(gt_dir), str(pred_dir))


def _counts(per_class):
    return {c: (r["tp"], r["fp"], r["fn"]) for c, r in per_class.items() if r["tp"] + r["fp"] + r["fn"]}


def test_id_encoding_round_trip():
    ids = np.array([[0, 1, 255], [256, 65535, 2**24 - 1]])
    assert (rgb2id(id2rgb(ids)) == ids).all()
    assert tuple(id2rgb(np.array([[1 + 2 * 256 + 3 * 65536]]))[0, 0]) == (1, 2, 3)


def test_iou_exactly_half_is_not_a_match(tmp_path):
    # gt 4 px, prediction 2 of them: IoU 2/4 = 0.5, not > 0.5 -> a false negative and a false positive
    summary, per_class = _score(tmp_path, [(_row("1111"), [(1, 1, 0)], _row("2200"), [(2, 1)])])
    assert _counts(per_class) == {1: (0, 1, 1)}
    assert summary["All"]["pq"] == 0 and summary["All"]["n"] == 1


def test_iou_above_half_matches_with_its_iou(tmp_path):
    summary, per_class = _score(tmp_path, [(_row("1111"), [(1, 1, 0)], _row("2220"), [(2, 1)])])
    assert _counts(per_class) == {1: (1, 0, 0)}
    assert per_class[1]["iou"] == pytest.approx(0.75)
    # PQ = 0.75 / 1, SQ = 0.75, RQ = 1
    assert (summary["All"]["pq"], summary["All"]["sq"], summary["All"]["rq"]) == pytest.approx((0.75, 0.75, 1.0))


def test_segment_of_another_category_never_matches(tmp_path):
    summary, per_class = _score(tmp_path, [(_row("1111"), [(1, 1, 0)], _row("2222"), [(2, 2)])])
    assert _counts(per_class) == {1: (0, 0, 1), 2: (0, 1, 0)}
    assert summary["Things"]["n"] == 2 and summary["Things"]["pq"] == 0
    assert math.isnan(summary["Stuff"]["pq"]) and summary["Stuff"]["n"] == 0  # panopticapi divides by zero here
    assert math.isnan(per_class[3]["pq"])  # neither ground truth nor prediction: left out


def test_void_pixels_leave_the_union(tmp_path):
    # gt: 4 void + 4 of segment 1; prediction covers all 8: intersection 4, union 8 + 4 - 4 - 4 (void) = 4
    _, per_class = _score(tmp_path, [(_row("00001111"), [(1, 1, 0)], _row("55555555"), [(5, 1)])])
    assert _counts(per_class) == {1: (1, 0, 0)} and per_class[1]["iou"] == pytest.approx(1.0)


def test_unmatched_prediction_on_void(tmp_path):
    # exactly half on void: still a false positive
    _, per_class = _score(tmp_path, [(_row("0011"), [(1, 3, 0)], _row("5555"), [(5, 1)])])
    assert _counts(per_class) == {1: (0, 1, 0), 3: (0, 0, 1)}
    # three quarters on void: ignored
    _, per_class = _score(tmp_path, [(_row("0001"), [(1, 3, 0)], _row("5555"), [(5, 1)])])
    assert _counts(per_class) == {3: (0, 0, 1)}


def test_crowd_regions(tmp_path):
    # gt: crowd of category 1 on pixels 0-3, stuff 3 on 4-7. Prediction: category 1 inside the crowd (ignored),
    # category 2 inside it (a false positive: the crowd is category 1's), the stuff exactly (a match)
    _, per_class = _score(
        tmp_path,
        [(_row("11112222"), [(1, 1, 1), (2, 3, 0)], _row("55662222"), [(5, 1), (6, 2), (2, 3)])],
    )
    assert _counts(per_class) == {2: (0, 1, 0), 3: (1, 0, 0)}  # the crowd is no false negative
    # a prediction equal to a crowd region is neither matched nor a false positive
    _, per_class = _score(tmp_path, [(_row("1111"), [(1, 1, 1)], _row("5555"), [(5, 1)])])
    assert _counts(per_class) == {}


def test_ground_truth_area_is_the_jsons(tmp_path):
    # 4 gt pixels but "area": 6 in the json: union 3 + 6 - 3 = 6, IoU 0.5 -> no match (4 px would give 0.75)
    _, per_class = _score(tmp_path, [(_row("11110000"), [(1, 1, 0, 6)], _row("55500000"), [(5, 1)])])
    assert _counts(per_class) == {1: (0, 1, 1)}


def test_counts_summed_over_images_before_ratios(tmp_path):
    # image 0: IoU 1; image 1: IoU 0.75, and a false positive of category 2 and a missed stuff segment
    summary, per_class = _score(
        tmp_path,
        [
            (_row("1111"), [(1, 1, 0)], _row("5555"), [(5, 1)]),
            (_row("11113333"), [(1, 1, 0), (3, 3, 0)], _row("55506666"), [(5, 1), (6, 2)]),
        ],
    )
    assert _counts(per_class) == {1: (2, 0, 0), 2: (0, 1, 0), 3: (0, 0, 1)}
    # category 1: PQ = SQ = 1.75 / 2, RQ 1; category 2 and 3: 0. All = mean over the 3, Things over 1 and 2
    assert summary["All"]["pq"] == pytest.approx(0.875 / 3)
    assert summary["All"]["sq"] == pytest.approx(0.875 / 3)
    assert summary["All"]["rq"] == pytest.approx(1 / 3)
    assert summary["Things"]["pq"] == pytest.approx(0.875 / 2) and summary["Things"]["n"] == 2
    assert summary["Stuff"]["pq"] == 0 and summary["Stuff"]["n"] == 1


@pytest.mark.parametrize(
    "pred, segs, words",
    [
        (_row("2255"), [(2, 1)], "segment 5 is in the PNG but not in segments_info"),
        (_row("2222"), [(2, 1), (9, 1)], "segment 9 is in segments_info but not in the mask"),
        (_row("2222"), [(2, 7)], "unknown category_id 7"),
    ],
)
def test_inconsistent_predictions_are_one_line(tmp_path, pred, segs, words):
    with pytest.raises(PanopticInputError, match=words) as e:
        _score(tmp_path, [(_row("1111"), [(1, 1, 0)], pred, segs)])
    assert "\n" not in str(e.value)


# ---- COCOPanopticEvaluator: detector outputs -> dataset ids -> PQ ----------------------------------------------


def _register_dataset(root, name):
    """Two 4x8 images: thing category 1 (contiguous 0) on the left, stuff 3 (semantic label 1) on the right."""
    gt_dir = os.path.join(root, "panoptic")
    os.makedirs(gt_dir, exist_ok=True)
    gt = {"images": [], "annotations": [], "categories": CATS}
    for i in range(2):
        ids = np.zeros((4, 8), np.uint32)
        ids[:, :4] = 10
        ids[:, 4:] = 20
        Image.fromarray(id2rgb(ids)).save(os.path.join(gt_dir, f"img{i}.png"))
        gt["images"].append({"id": i, "file_name": f"img{i}.jpg", "height": 4, "width": 8})
        gt["annotations"].append(
            {
                "image_id": i,
                "file_name": f"img{i}.png",
                "segments_info": [
                    {"id": 10, "category_id": 1, "iscrowd": 0, "area": 16},
                    {"id": 20, "category_id": 3, "iscrowd": 0, "area": 16},
                ],
            }
        )
    with open(os.path.join(root, "panoptic.json"), "w") as f:
        json.dump(gt, f)
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        panoptic_json=os.path.join(root, "panoptic.json"),
        panoptic_root=gt_dir,
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
        stuff_dataset_id_to_contiguous_id={0: 0, 3: 1},
    )


def _output(i):
    """Image 0 exact; image 1: the thing one column wider (IoU 16/20), the stuff one column narrower (12/16)."""
    ids = torch.zeros((4, 8), dtype=torch.int32)
    ids[:, : 4 + i] = 1
    ids[:, 4 + i :] = 2
    segs = [{"id": 1, "isthing": True, "category_id": 0}, {"id": 2, "isthing": False, "category_id": 1}]
    return {"panoptic_seg": (ids, segs)}


def test_evaluator_maps_categories_and_scores(tmp_path):
    _register_dataset(str(tmp_path), "pq_test_two")
    ev = COCOPanopticEvaluator("pq_test_two", output_dir=str(tmp_path / "out"), distributed=False)
    for i in range(2):
        ev.process([{"image_id": i, "file_name": f"/x/img{i}.jpg"}], [_output(i)])
    res = ev.evaluate()["panoptic_seg"]
    # thing: IoUs 1 and 16/20 over 2 TP; stuff: 1 and 12/16
    thing, stuff = (1 + 0.8) / 2, (1 + 0.75) / 2
    assert res["PQ_th"] == pytest.approx(100 * thing)
    assert res["PQ_st"] == pytest.approx(100 * stuff)
    assert res["PQ"] == pytest.approx(100 * (thing + stuff) / 2)
    assert res["RQ"] == pytest.approx(100.0)
    saved = json.load(open(tmp_path / "out" / "panoptic_evaluation.json"))
    assert saved["per_class"]["a"]["tp"] == 2 and saved["summary"]["PQ"] == pytest.approx(res["PQ"])


def test_evaluator_refuses_unknown_classes_and_missing_metadata(tmp_path):
    _register_dataset(str(tmp_path), "pq_test_bad")
    ev = COCOPanopticEvaluator("pq_test_bad", distributed=False)
    out = _output(0)
    out["panoptic_seg"][1][0]["category_id"] = 5
    with pytest.raises(PanopticInputError, match="thing class 5 has no dataset category"):
        ev.process([{"image_id": 0, "file_name": "img0.jpg"}], [out])
    MetadataCatalog.get("pq_test_nometa").set(thing_classes=["a"])
    with pytest.raises(PanopticInputError, match="no panoptic_json or panoptic_root"):
        COCOPanopticEvaluator("pq_test_nometa")


def _dist_worker(rank, init_file, root):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    _register_dataset(root, "pq_test_dist")
    ev = COCOPanopticEvaluator("pq_test_dist", distributed=True, gather_chunk=1)
    ev.process([{"image_id": rank, "file_name": f"img{rank}.jpg"}], [_output(rank)])
    res = ev.evaluate()
    if rank == 0:
        torch.save(res, os.path.join(root, "dist.pt"))
    else:
        assert res == {}
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_dist_worker, args=(os.path.join(d, "init"), str(tmp_path)), nprocs=2)
    _register_dataset(str(tmp_path), "pq_test_single")
    ev = COCOPanopticEvaluator("pq_test_single", distributed=False)
    for i in range(2):
        ev.process([{"image_id": i, "file_name": f"img{i}.jpg"}], [_output(i)])
    assert torch.load(tmp_path / "dist.pt", weights_only=False) == ev.evaluate()


def test_ground_truth_png_missing_or_of_another_size_is_one_line(tmp_path):
    _score(tmp_path, [(_row("1111"), [(1, 1, 0)], _row("2222"), [(2, 1)])])  # writes gt/0.png and pred/0.png
    gt = {"images": [{"id": 0, "file_name": "0.jpg", "height": 1, "width": 4}], "categories": CATS,
          "annotations": [{"image_id": 0, "file_name": "0.png",
                           "segments_info": [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 4}]}]}  # fmt: skip
    preds = [{"image_id": 0, "file_name": "0.png", "segments_info": [{"id": 2, "category_id": 1}]}]
    Image.fromarray(id2rgb(np.ones((2, 4), np.uint32))).save(tmp_path / "gt" / "0.png")
    with pytest.raises(PanopticInputError, match="ground truth is 2.4 but the prediction is 1.4") as e:
        evaluate_panoptic(gt, preds, str(tmp_path / "gt"), str(tmp_path / "pred"))
    assert "\n" not in str(e.value)
    os.remove(tmp_path / "gt" / "0.png")
    with pytest.raises(PanopticInputError, match="cannot open panoptic PNG .*0.png"):
        evaluate_panoptic(gt, preds, str(tmp_path / "gt"), str(tmp_path / "pred"))
