import json
import logging
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from detgn.data import DatasetCatalog, MetadataCatalog
from detgn.evaluation import COCOEvaluator
from detgn.structures import Boxes, BoxMode, Instances

from tests.util import REPO, tool_module

FIXTURE = os.path.join(REPO, "tests", "data", "coco_eval_fixture")


def test_fixture_matches_documented_numbers_exactly():
    evaluate_json = tool_module("evaluate_json").evaluate_json

    expected = json.load(open(os.path.join(FIXTURE, "expected_stats.json")))
    gt = os.path.join(FIXTURE, "instances_val2014_100.json")
    got_b = evaluate_json(gt, os.path.join(FIXTURE, "instances_val2014_fakebbox100_results.json"), ["bbox"])
    got_s = evaluate_json(gt, os.path.join(FIXTURE, "instances_val2014_fakesegm100_results.json"), ["segm"])
    # identical to the documented numbers up to the last bit of a double: plain pycocotools 2.0.11 with
    # numpy 2.4 gives APs(segm) = 0.3873740315997837 vs the documented ...838 (numpy's summation order)
    assert got_b["bbox"] == pytest.approx(expected["bbox"], rel=1e-15, abs=0)
    assert got_s["segm"] == pytest.approx(expected["segm"], rel=1e-15, abs=0)
    assert sum(a != b for a, b in zip(got_b["bbox"] + got_s["segm"], expected["bbox"] + expected["segm"])) <= 1


def test_evaluate_json_cli_errors(tmp_path, capsys):
    main = tool_module("evaluate_json").main

    assert main(["--gt", str(tmp_path / "nope.json"), "--results", str(tmp_path / "r.json")]) == 2
    assert "File not found" in capsys.readouterr().err


SIZE = 40.0


def _dataset(n=6, h=100, w=120):
    """n images, each with one 40x40 square of class (i % 2); no COCO json (converted on the fly)."""
    dicts = []
    for i in range(n):
        x0, y0 = 10 + 5 * i, 20 + 3 * i
        mask = np.zeros((h, w), np.uint8)
        mask[y0 : y0 + 40, x0 : x0 + 40] = 1
        import pycocotools.mask as mu

        rle = mu.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode()
        dicts.append(
            {
                "file_name": f"img{i}.png",
                "image_id": 100 + i,
                "height": h,
                "width": w,
                "annotations": [
                    {
                        "bbox": [x0, y0, SIZE, SIZE],
                        "bbox_mode": BoxMode.XYWH_ABS,
                        "category_id": i % 2,
                        "iscrowd": 0,
                        "segmentation": rle,
                    }
                ],
            }
        )
    return dicts


def _register(name, n=6):
    if name not in DatasetCatalog:
        DatasetCatalog.register(name, lambda: _dataset(n))
        MetadataCatalog.get(name).set(thing_classes=["a", "b"], thing_dataset_id_to_contiguous_id={3: 0, 7: 1})


def _prediction(d, shift=0.0):
    a = d["annotations"][0]
    x0, y0 = a["bbox"][:2]
    box = torch.tensor([[x0 + shift, y0, x0 + shift + SIZE, y0 + SIZE]])
    m = torch.zeros(1, d["height"], d["width"], dtype=torch.bool)
    xs = int(round(x0 + shift))
    m[0, int(y0) : int(y0) + 40, xs : xs + 40] = True
    inst = Instances(
        (d["height"], d["width"]),
        pred_boxes=Boxes(box),
        scores=torch.tensor([0.9]),
        pred_classes=torch.tensor([a["category_id"]]),
        pred_masks=m,
    )
    return {"instances": inst}


def _run(evaluator, dicts, shift=0.0, empty=False):
    evaluator.reset()
    for d in dicts:
        out = _prediction(d, shift)
        if empty:
            out = {"instances": out["instances"][torch.zeros(1, dtype=torch.bool)]}
        evaluator.process([{"image_id": d["image_id"]}], [out])
    return evaluator.evaluate()


def test_ground_truth_as_predictions_gives_ap_100(tmp_path):
    _register("evaltest_squares")
    ev = COCOEvaluator("evaltest_squares", output_dir=str(tmp_path), distributed=False)
    res = _run(ev, _dataset())
    assert res["bbox"]["AP"] == pytest.approx(100.0) and res["segm"]["AP"] == pytest.approx(100.0)
    assert res["bbox"]["AP-a"] == pytest.approx(100.0) and res["bbox"]["AP-b"] == pytest.approx(100.0)
    results = json.load(open(tmp_path / "coco_instances_results.json"))
    assert len(results) == 6 and {r["category_id"] for r in results} == {3, 7}  # original dataset ids
    assert results[0]["bbox"][2] == pytest.approx(SIZE)  # XYWH
    assert os.path.exists(tmp_path / "instances_predictions.pth")


def test_shifted_boxes_give_independently_computed_ap(tmp_path):
    _register("evaltest_squares")
    shift = 6.5
    overlap = SIZE - shift
    iou = overlap * SIZE / (2 * SIZE * SIZE - overlap * SIZE)  # 0.7204
    thresholds = np.linspace(0.5, 0.95, 10)
    expected_ap = 100.0 * np.mean(iou >= thresholds)  # each GT is matched at thresholds <= IoU, else missed
    ev = COCOEvaluator("evaltest_squares", output_dir=str(tmp_path), distributed=False, tasks=["bbox"])
    res = _run(ev, _dataset(), shift=shift)
    assert expected_ap == pytest.approx(50.0)
    assert res["bbox"]["AP"] == pytest.approx(expected_ap)
    assert res["bbox"]["AP50"] == pytest.approx(100.0) and res["bbox"]["AP75"] == pytest.approx(0.0)


def test_empty_predictions_give_zero_with_warning(tmp_path, caplog):
    _register("evaltest_squares")
    ev = COCOEvaluator("evaltest_squares", output_dir=str(tmp_path), distributed=False)
    with caplog.at_level(logging.WARNING):
        res = _run(ev, _dataset(), empty=True)
    assert res["bbox"]["AP"] == 0.0 and res["segm"]["AP"] == 0.0
    assert "No bbox predictions" in caplog.text


def _dist_worker(rank, init_file, out_dir):
    import torch.distributed as dist

    from detgn.data.samplers import InferenceSampler

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    _register("evaltest_squares7", 7)
    dicts = _dataset(7)
    runs = {}
    for chunk in (10**6, 2):  # one message per rank, and streamed two images per message (uneven: 4 and 3 images)
        ev = COCOEvaluator(
            "evaltest_squares7", output_dir=out_dir, distributed=True, tasks=["bbox"], gather_chunk=chunk
        )
        ev.reset()
        for i in InferenceSampler(len(dicts)):
            ev.process([{"image_id": dicts[i]["image_id"]}], [_prediction(dicts[i], shift=float(i))])
        res = ev.evaluate()
        if rank == 0:
            preds = torch.load(os.path.join(out_dir, "instances_predictions.pth"), weights_only=False)
            runs[chunk] = {"res": res, "n": len(preds), "ids": [p["image_id"] for p in preds]}
        else:
            assert res == {}
    if rank == 0:
        torch.save({**runs[10**6], "streamed": runs[2]}, os.path.join(out_dir, "dist.pt"))
    dist.barrier()  # let in-flight sends finish before the group goes away
    dist.destroy_process_group()


def test_two_process_evaluation_equals_one_process(tmp_path):
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_dist_worker, args=(os.path.join(d, "init"), str(tmp_path)), nprocs=2)
    got = torch.load(tmp_path / "dist.pt", weights_only=False)
    _register("evaltest_squares7", 7)
    dicts = _dataset(7)
    ev = COCOEvaluator("evaltest_squares7", output_dir=str(tmp_path / "single"), distributed=False, tasks=["bbox"])
    ev.reset()
    for i, d in enumerate(dicts):
        ev.process([{"image_id": d["image_id"]}], [_prediction(d, shift=float(i))])
    single = ev.evaluate()
    assert got["n"] == 7
    assert got["res"]["bbox"]["AP"] == pytest.approx(single["bbox"]["AP"])
    assert got["streamed"]["ids"] == got["ids"] and repr(got["streamed"]["res"]) == repr(
        got["res"]
    )  # streaming = one-shot (NaN-aware)
    assert 0 < single["bbox"]["AP"] < 100


def test_faster_coco_eval_backend_gives_the_same_numbers():
    pytest.importorskip("faster_coco_eval")
    evaluate_json = tool_module("evaluate_json").evaluate_json

    gt = os.path.join(FIXTURE, "instances_val2014_100.json")
    for t in ("bbox", "segm"):
        res = os.path.join(FIXTURE, f"instances_val2014_fake{t}100_results.json")
        ref = evaluate_json(gt, res, [t])[t]
        fast = evaluate_json(gt, res, [t], backend="faster_coco_eval")[t]
        assert fast == pytest.approx(ref, abs=1e-9), t


def _small_gt(tmp_path):
    import pycocotools.mask as mu

    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 5:20] = 1
    rle = mu.encode(np.asfortranarray(mask))
    gt = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
        ],
        "categories": [{"id": 7, "name": "thing"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [5, 5, 15, 10],
                "area": 150,
                "iscrowd": 0,
                "segmentation": {"size": [20, 30], "counts": rle["counts"].decode()},
            }
        ],
    }
    return gt, rle["counts"].decode()


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda r: r[0].update(score=float("nan")), "score nan is not a finite number"),
        (lambda r: r[0].update(bbox=[1, 2, float("inf"), 3]), "is not [x, y, width, height]"),
        (lambda r: r[0].pop("score"), "has no 'score'"),
        (lambda r: r[0].update(image_id=99), "image_id 99 is not an image of the ground truth"),
        (lambda r: r[0].update(category_id=3), "category_id 3 is not a category"),
        (lambda r: r[0].update(segmentation={"size": [20, 30], "counts": "0"}), "RLE counts cover 0 pixels"),
        (lambda r: r[0].update(segmentation={"size": [10, 30], "counts": "0"}), "differs from the image's"),
        (lambda r: r[0].update(segmentation={"size": [20, 30], "counts": "garbage~~"}), "malformed RLE counts"),
    ],
)
def test_evaluate_json_refuses_bad_results(tmp_path, capsys, edit, words):
    main = tool_module("evaluate_json").main

    gt, counts = _small_gt(tmp_path)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = [
        {
            "image_id": 1,
            "category_id": 7,
            "score": 0.9,
            "bbox": [5, 5, 15, 10],
            "segmentation": {"size": [20, 30], "counts": counts},
        }
    ]
    assert (
        main(["--gt", str(tmp_path / "gt.json"), "--results", _write(tmp_path, results), "--type", "bbox", "segm"]) == 0
    )
    capsys.readouterr()
    edit(results)
    assert (
        main(["--gt", str(tmp_path / "gt.json"), "--results", _write(tmp_path, results), "--type", "bbox", "segm"]) == 2
    )
    err = capsys.readouterr().err
    assert words in err and "result 0" in err and err.strip().count("\n") == 0, err


def _write(tmp_path, results):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results, allow_nan=True))
    return str(path)


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            lambda g: g["images"].append(dict(g["images"][0], file_name="c.png")),
            "1 image id(s) used by more than one image (1)",
        ),
        (lambda g: g["annotations"][0].pop("image_id"), "annotations[0] has no 'image_id'"),
        (
            lambda g: g.update(annotations={"0": g["annotations"][0]}),
            "'annotations' must be a list of objects, got dict",
        ),
        (
            lambda g: g["annotations"][0].update(segmentation={"size": [20, 30], "counts": "0"}),
            "RLE counts cover 0 pixels",
        ),
    ],
)
def test_ground_truth_checked_before_pycocotools(tmp_path, capsys, edit, words):
    main = tool_module("evaluate_json").main

    gt, counts = _small_gt(tmp_path)
    edit(gt)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = [{"image_id": 1, "category_id": 7, "score": 0.9, "bbox": [5, 5, 15, 10]}]
    assert main(["--gt", str(tmp_path / "gt.json"), "--results", _write(tmp_path, results)]) == 2
    err = capsys.readouterr().err
    assert words in err and str(tmp_path / "gt.json") in err and "Traceback" not in err, err
