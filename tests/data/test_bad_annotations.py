"""Bad data never crashes and never trains silently on wrong values: each case is a named skip or a named error."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from detgn.data import load_coco_json
from detgn.data.datasets.coco import DatasetFormatError
from .shapes import make_shapes_dataset
from detgn.data.detection_utils import read_image
from tests.util import edit_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def shapes(tmp_path):
    return make_shapes_dataset(str(tmp_path / "shapes"), num_images=4, seed=3, crowd_every=3)




def _first_polygon_ann(d):
    return next(a for a in d["annotations"] if isinstance(a["segmentation"], list))


def _first_rle_ann(d):
    return next(a for a in d["annotations"] if isinstance(a["segmentation"], dict))


def _load_and_warnings(json_file, image_root, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="detgn.data.datasets.coco"):
        dicts = load_coco_json(json_file, image_root)
    return dicts, " | ".join(r.getMessage() for r in caplog.records)


def _ann_ids(dicts):
    return sum(len(d["annotations"]) for d in dicts)


@pytest.mark.parametrize("value,kind", [(float("nan"), "NaN/Inf"), (float("inf"), "NaN/Inf"), ("12.5", "non-numeric")])
def test_bad_polygon_coordinates_are_named_skips(shapes, caplog, value, kind):
    json_file, image_root = shapes
    before = _ann_ids(load_coco_json(json_file, image_root))
    d = edit_json(json_file, lambda d: _first_polygon_ann(d)["segmentation"][0].__setitem__(1, value))
    ann = _first_polygon_ann(d)
    dicts, warnings = _load_and_warnings(json_file, image_root, caplog)
    assert _ann_ids(dicts) == before - 1
    assert f"polygon with {kind} coordinates" in warnings and f"annotation id {ann['id']}" in warnings
    assert f"image id {ann['image_id']}" in warnings and os.path.basename(json_file) in warnings


def test_nan_polygon_never_reaches_pycocotools_in_training(shapes, tmp_path):
    """What used to segfault (rc 139) in polygons_to_bitmask: a short training run with bitmask masks."""
    json_file, image_root = shapes
    edit_json(json_file, lambda d: _first_polygon_ann(d)["segmentation"][0].__setitem__(0, float("nan")))
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from detgn.data import register_coco_instances, build_detection_train_loader\n"
        "from detgn.config import get_cfg\n"
        "register_coco_instances('bad_nan_shapes', {}, %r, %r)\n"
        "cfg = get_cfg(); cfg.DATASETS.TRAIN = ('bad_nan_shapes',); cfg.INPUT.MASK_FORMAT = 'bitmask'\n"
        "cfg.SOLVER.IMS_PER_BATCH = 2; cfg.DATALOADER.NUM_WORKERS = 0; cfg.INPUT.MIN_SIZE_TRAIN = (96,)\n"
        "it = iter(build_detection_train_loader(cfg, seed=0))\n"
        "n = sum(len(x['instances']) for _ in range(6) for x in next(it))\n"
        "print('instances', n)\n" % (REPO, json_file, image_root))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "polygon with NaN/Inf coordinates" in r.stderr


@pytest.mark.parametrize("case", ["wrong_size", "bad_counts_list", "bad_counts_string"])
def test_bad_rle_is_a_named_skip(shapes, caplog, case):
    json_file, image_root = shapes

    def edit(d):
        seg = _first_rle_ann(d)["segmentation"]
        if case == "wrong_size":
            seg["size"] = [seg["size"][0] + 5, seg["size"][1]]
        elif case == "bad_counts_list":
            seg["counts"] = [5, 7, 3]
        else:
            seg["counts"] = "zz!!" if isinstance(seg["counts"], str) else [1, 2]

    before = _ann_ids(load_coco_json(json_file, image_root))
    d = edit_json(json_file, edit)
    dicts, warnings = _load_and_warnings(json_file, image_root, caplog)
    assert _ann_ids(dicts) == before - 1
    assert "RLE" in warnings and f"annotation id {_first_rle_ann(d)['id']}" in warnings


def test_duplicate_annotation_ids_are_refused(shapes):
    json_file, image_root = shapes
    d = edit_json(json_file, lambda d: d["annotations"][1].__setitem__("id", d["annotations"][0]["id"]))
    with pytest.raises(DatasetFormatError, match=rf"1 annotation id\(s\) used more than once \({d['annotations'][0]['id']}\)"):
        load_coco_json(json_file, image_root)


def test_annotation_of_unknown_image_is_counted_and_named(shapes, caplog):
    json_file, image_root = shapes
    d = edit_json(json_file, lambda d: d["annotations"][0].__setitem__("image_id", 9999))
    _, warnings = _load_and_warnings(json_file, image_root, caplog)
    assert "skipped 1 item(s) with image id not in 'images'" in warnings
    assert f"annotation id {d['annotations'][0]['id']} (image_id 9999)" in warnings


def test_non_finite_bbox_is_a_named_skip(shapes, caplog):
    json_file, image_root = shapes
    edit_json(json_file, lambda d: d["annotations"][0]["bbox"].__setitem__(2, float("nan")))
    _, warnings = _load_and_warnings(json_file, image_root, caplog)
    assert "bbox that is not 4 finite numbers" in warnings


def test_16bit_png_uses_its_value_range(tmp_path):
    vals = np.array([[1000, 2000], [3000, 41000]], dtype=np.uint16)  # all above 255: a cast saturates every pixel
    Image.fromarray(vals).save(tmp_path / "g16.png")
    img = read_image(str(tmp_path / "g16.png"), "BGR")
    assert img.dtype == np.uint8 and img.shape == (2, 2, 3)
    assert img[0, 0, 0] == 0 and img[1, 1, 0] == 255 and 0 < img[0, 1, 0] < img[1, 0, 0] < 255
    assert (img[..., 0] == img[..., 2]).all()
    Image.fromarray(np.full((3, 3), 700, np.uint16)).save(tmp_path / "flat.png")
    assert read_image(str(tmp_path / "flat.png"), "RGB").max() == 0  # a constant image has no range


def test_short_rle_is_skipped_never_decoded(shapes, caplog):
    """RLE counts "0" made pycocotools decode uninitialised memory (a different mask on every call)."""
    json_file, root = shapes
    data = edit_json(json_file, lambda d: _first_rle_ann(d).update(segmentation={"size": _first_rle_ann(d)["segmentation"]["size"], "counts": "0"}))
    bad_id = next(a["id"] for a in data["annotations"] if a["segmentation"].get("counts") == "0" if isinstance(a["segmentation"], dict))
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_json(json_file, root)
    assert "malformed RLE" in caplog.text and f"annotation id {bad_id}" in caplog.text
    assert all(o.get("segmentation", {}) != {"size": o.get("segmentation", {}).get("size"), "counts": "0"}
               for d in dicts for o in d["annotations"] if isinstance(o.get("segmentation"), dict))


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["images"].append(dict(d["images"][0])), "image id(s) used by more than one image"),
    (lambda d: d["annotations"][0].pop("image_id"), "annotations[0] has no 'image_id'"),
    (lambda d: d.update(annotations={}), "'annotations' must be a list of objects, got dict"),
    (lambda d: d["categories"][0].pop("name"), "categories[0] has no 'name'"),
])
def test_structure_refused_naming_the_entry(shapes, edit, words):
    json_file, root = shapes
    edit_json(json_file, edit)
    with pytest.raises(DatasetFormatError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        load_coco_json(json_file, root)
