"""Generated: every field the COCO and LVIS loaders, the evaluation's ground truth and the results checks read, with
wrong values of each kind. Each gives either one line naming the file, the entry and the field (refused), or a
skip that is counted and named in one WARNING (datasets/README.md), never a TypeError from deep inside and never a
silent acceptance."""
import copy
import json
import logging
import math

import pytest

from detgn.data.datasets.coco import load_coco_json
from detgn.data.datasets.lvis import load_lvis_json
from detgn.evaluation.coco_inputs import check_results, load_checked_coco_gt
from detgn.utils.errors import UserInputError

NAN, INF = float("nan"), float("inf")
KINDS = {
    "string": "7", "fraction": 1.5, "bool": True, "null": None, "list": [1], "object": {"a": 1}, "nan": NAN,
    "inf": INF, "negative": -3, "zero": 0, "int": 7, "empty": "", "two": 2, "list_of_str": ["1"],
    "bbox3": [1.0, 2.0, 3.0], "bbox_str": [1, "2", 3, 4], "bbox_nan": [1, 2, NAN, 4], "bbox_inf": [1, 2, 3, INF],
    "bbox_negative": [1, 2, -3, 4], "poly_nan": [[1, 1, 5, 1, NAN, 5]], "poly_str": [[1, 1, 5, 1, "5", 5]],
    "rle_no_counts": {"size": [32, 32]},
}
ID = ["string", "fraction", "bool", "null", "list", "object", "nan"]
SIZE = ["string", "fraction", "bool", "null", "list", "object", "nan", "inf", "negative", "zero"]
TEXT = ["int", "null", "list", "object", "bool"]
BBOX = ["string", "int", "null", "object", "bbox3", "bbox_str", "bbox_nan", "bbox_inf"]
FLAG = ["string", "fraction", "null", "list", "object", "nan", "negative", "two"]

COCO_FIELDS = [
    ("images", "id", ID), ("images", "file_name", TEXT + ["empty"]), ("images", "height", SIZE),
    ("images", "width", SIZE), ("annotations", "id", ID), ("annotations", "image_id", ID),
    ("annotations", "category_id", ID), ("annotations", "bbox", BBOX),
    ("annotations", "segmentation", ["string", "int", "bool", "rle_no_counts", "poly_nan", "poly_str"]),
    ("annotations", "iscrowd", FLAG), ("annotations", "ignore", FLAG), ("categories", "id", ID),
    ("categories", "name", TEXT),
]
LVIS_FIELDS = [
    ("images", "neg_category_ids", ["string", "int", "null", "object", "list_of_str"]),
    ("images", "not_exhaustive_category_ids", ["string", "int", "null", "object", "list_of_str"]),
    ("images", "coco_url", ["int", "null", "list"]),
    ("categories", "frequency", ["int", "null", "list", "string"]),
]
GT_FIELDS = [
    ("annotations", "area", ["string", "null", "list", "nan", "inf", "negative"]),
    ("annotations", "bbox", BBOX + ["bbox_negative"]),
    ("annotations", "iscrowd", FLAG),
    ("annotations", "segmentation", ["string", "int", "bool"]),
]
RESULT_FIELDS = [
    ("image_id", ID), ("category_id", ID), ("score", ["string", "null", "list", "nan", "inf", "bool"]),
    ("bbox", BBOX + ["bbox_negative"]), ("segmentation", ["string", "int", "list", "rle_no_counts"]),
]


def _cases(fields):
    return [pytest.param(lst, field, kind, id=f"{lst}.{field}={kind}") for lst, field, kinds in fields for kind in kinds]


def _coco(tmp_path, lvis=False):
    root = tmp_path / "images"
    (root / "train2017").mkdir(parents=True)
    images = []
    for i in (1, 2):
        name = f"{i:04d}.png"
        (root / "train2017" / name).write_bytes(b"")
        img = {"id": i, "height": 32, "width": 32}
        img.update({"coco_url": f"http://x/train2017/{name}", "neg_category_ids": [2], "not_exhaustive_category_ids": []}
                   if lvis else {"file_name": f"train2017/{name}"})
        images.append(img)
    anns = [
        {"id": 10 + k, "image_id": 1 + k % 2, "category_id": 1 + k % 2, "bbox": [2.0, 2.0, 10.0, 10.0], "area": 100.0,
         "iscrowd": 0, "segmentation": [[2.0, 2.0, 12.0, 2.0, 12.0, 12.0, 2.0, 12.0]]}
        for k in range(3)
    ]
    if lvis:
        for a in anns:
            del a["iscrowd"]
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    if lvis:
        for c in cats:
            c["frequency"] = "f"
    return {"images": images, "annotations": anns, "categories": cats}, str(root)


def _write(tmp_path, data):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))  # NaN / Infinity literals, as Python's json writes them
    return str(path)


def _mutate(data, lst, field, kind):
    data = copy.deepcopy(data)
    entry = data[lst][0]
    if field == "coco_url":
        entry.pop("file_name", None)
    entry[field] = copy.deepcopy(KINDS[kind])
    return data, entry


def _assert_refused_or_counted(load, path, entry, field, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        try:
            load()
        except UserInputError as e:
            msg = str(e)
            assert "\n" not in msg and path in msg and f"'{field}'" in msg, msg
            return "refused"
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    named = [w for w in warned if f"annotation id {entry.get('id')}" in w and "skipped 1 item" in w]
    assert named, f"{field}={entry[field]!r} was accepted silently; warnings: {warned}"
    return "skipped"


@pytest.mark.parametrize("lst,field,kind", _cases(COCO_FIELDS))
def test_coco_loader_field_types(tmp_path, caplog, lst, field, kind):
    data, root = _coco(tmp_path)
    data, entry = _mutate(data, lst, field, kind)
    path = _write(tmp_path, data)
    how = _assert_refused_or_counted(lambda: load_coco_json(path, root), path, entry, field, caplog)
    if lst != "annotations" or field in ("id", "image_id", "category_id"):
        assert how == "refused"  # what the file's structure hangs on is never skipped


@pytest.mark.parametrize("lst,field,kind", _cases(LVIS_FIELDS))
def test_lvis_loader_field_types(tmp_path, caplog, lst, field, kind):
    data, root = _coco(tmp_path, lvis=True)
    data, entry = _mutate(data, lst, field, kind)
    path = _write(tmp_path, data)
    assert _assert_refused_or_counted(lambda: load_lvis_json(path, root), path, entry, field, caplog) == "refused"


@pytest.mark.parametrize("lst,field,kind", _cases(GT_FIELDS + [f for f in COCO_FIELDS if f[0] != "annotations"
                                                                  or f[1] in ("id", "image_id", "category_id")]))
def test_evaluation_ground_truth_field_types(tmp_path, lst, field, kind):
    data, _ = _coco(tmp_path)
    data, entry = _mutate(data, lst, field, kind)
    path = _write(tmp_path, data)
    with pytest.raises(UserInputError) as e:
        load_checked_coco_gt(path)
    assert "\n" not in str(e.value) and path in str(e.value) and f"'{field}'" in str(e.value), str(e.value)


@pytest.mark.parametrize("field,kind", [pytest.param(f, k, id=f"{f}={k}") for f, kinds in RESULT_FIELDS for k in kinds])
def test_results_field_types(tmp_path, field, kind):
    data, _ = _coco(tmp_path)
    gt = load_checked_coco_gt(_write(tmp_path, data))
    import numpy as np
    import pycocotools.mask as mask_util

    rle = mask_util.encode(np.asfortranarray(np.ones((32, 32), np.uint8)))
    good = {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [1.0, 1.0, 5.0, 5.0],
            "segmentation": {"size": [32, 32], "counts": rle["counts"].decode()}}
    iou = "segm" if field == "segmentation" else "bbox"
    bad = dict(good, **{field: copy.deepcopy(KINDS[kind])})
    with pytest.raises(UserInputError) as e:
        check_results([good, bad], gt, iou, source="res.json")
    msg = str(e.value)
    assert "\n" not in msg and "res.json: result 1" in msg and field in msg, msg


def test_every_field_the_loader_reads_is_in_the_table():
    """A field added to the loaders must be added to these tables: the names the loader reads from an entry."""
    import inspect
    import re

    from detgn.data.datasets import coco, lvis

    read = set(re.findall(r"""(?:ann|img|entry|cat|seg)(?:\.get\()?\[?["'](\w+)["']""", inspect.getsource(coco) + inspect.getsource(lvis)))
    covered = {f for _, f, _ in COCO_FIELDS + LVIS_FIELDS + GT_FIELDS} | {"counts", "size"}  # RLE keys: rle_problem
    assert read <= covered, sorted(read - covered)


def test_nan_literal_parse_is_still_a_named_skip(tmp_path, caplog):
    data, root = _coco(tmp_path)
    data["annotations"][0]["bbox"] = [1, 2, NAN, 4]
    path = _write(tmp_path, data)
    assert "NaN" in open(path).read()
    with caplog.at_level(logging.WARNING):
        records = load_coco_json(path, root)
    assert sum(len(r["annotations"]) for r in records) == 2 and "annotation id 10" in caplog.text
    assert not any(math.isnan(v) for r in records for a in r["annotations"] for v in a["bbox"])


@pytest.mark.parametrize("lst,field,kind", _cases(GT_FIELDS[:2] + LVIS_FIELDS[:2] + [("categories", "frequency", ["int"])]))
def test_lvis_evaluation_ground_truth_field_types(tmp_path, lst, field, kind):
    from detgn.evaluation.lvis_evaluation import load_checked_lvis_gt

    data, _ = _coco(tmp_path, lvis=True)
    for i, img in enumerate(data["images"]):
        img["file_name"] = f"train2017/{i}.png"
    good = load_checked_lvis_gt(_write(tmp_path, data))
    assert len(good.get_ann_ids()) == 3
    data, entry = _mutate(data, lst, field, kind)
    path = _write(tmp_path, data)
    with pytest.raises(UserInputError) as e:
        load_checked_lvis_gt(path)
    assert "\n" not in str(e.value) and path in str(e.value) and f"'{field}'" in str(e.value), str(e.value)
