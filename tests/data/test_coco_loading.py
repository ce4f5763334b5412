import json
import logging
import os

import pytest

from detgn.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts, load_coco_json, register_coco_instances
from detgn.data.datasets.coco import DatasetFormatError
from .shapes import make_shapes_dataset
from detgn.structures import BoxMode
from tests.util import edit_json


@pytest.fixture
def shapes(tmp_path):
    json_file, image_root = make_shapes_dataset(str(tmp_path / "shapes"), num_images=6, seed=1, crowd_every=4)
    return json_file, image_root




def test_shapes_generator_is_deterministic(tmp_path):
    a = make_shapes_dataset(str(tmp_path / "a"), num_images=3, seed=7)
    b = make_shapes_dataset(str(tmp_path / "b"), num_images=3, seed=7)
    assert json.load(open(a[0])) == json.load(open(b[0]))
    ia = open(os.path.join(a[1], "shape_0001.png"), "rb").read()
    ib = open(os.path.join(b[1], "shape_0001.png"), "rb").read()
    assert ia == ib


def test_load_category_mapping_and_crowd(shapes, tmp_path):
    json_file, image_root = shapes
    # make category ids non-contiguous: 1 -> 5, 2 -> 9
    edit_json(json_file, lambda d: ([c.update(id={1: 5, 2: 9}[c["id"]]) for c in d["categories"]],
                                [a.update(category_id={1: 5, 2: 9}[a["category_id"]]) for a in d["annotations"]]))
    dicts = load_coco_json(json_file, image_root, "shapes_test_map")
    meta = MetadataCatalog.get("shapes_test_map")
    assert meta.thing_classes == ["square", "disc"]
    assert meta.thing_dataset_id_to_contiguous_id == {5: 0, 9: 1}
    anns = [a for d in dicts for a in d["annotations"]]
    assert {a["category_id"] for a in anns} <= {0, 1}
    assert any(a["iscrowd"] == 1 for a in anns)
    assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in anns)
    segs = [a["segmentation"] for a in anns]
    assert any(isinstance(s, list) for s in segs) and any(isinstance(s, dict) for s in segs)
    assert len(dicts) == 6 and dicts[0]["height"] == 96 and dicts[0]["width"] == 128


def test_malformed_json_names_file(shapes):
    json_file, image_root = shapes
    with open(json_file, "w") as f:
        f.write('{"images": [1, 2,')
    with pytest.raises(DatasetFormatError) as e:
        load_coco_json(json_file, image_root)
    assert json_file in str(e.value) and "line 1" in str(e.value)


def test_missing_paths_fail_fast(shapes, tmp_path):
    json_file, image_root = shapes
    with pytest.raises(FileNotFoundError, match="Annotation file not found"):
        load_coco_json(str(tmp_path / "nope.json"), image_root)
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        load_coco_json(json_file, str(tmp_path / "no_images"))
    empty = tmp_path / "empty_images"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="None of the 6 images"):
        load_coco_json(json_file, str(empty))


def test_missing_image_is_skipped_with_warning(shapes, caplog):
    json_file, image_root = shapes
    os.remove(os.path.join(image_root, "shape_0002.png"))
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_json(json_file, image_root)
    assert len(dicts) == 5
    assert "missing image file" in caplog.text and "shape_0002.png" in caplog.text and "image id 3" in caplog.text


def test_bad_annotations_are_skipped_and_counted(shapes, caplog):
    json_file, image_root = shapes

    def corrupt(d):
        a = d["annotations"]
        a[0]["bbox"] = [5, 5, 0, 10]  # zero width
        a[1]["bbox"] = [5, 5, -3, 10]  # negative width
        a[2]["segmentation"] = [[1, 2, 3, 4]]  # 2 points
        a[3]["category_id"] = 77  # not in categories
        return d

    data = edit_json(json_file, corrupt)
    ids = [a["id"] for a in data["annotations"][:4]]
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_json(json_file, image_root)
    n = sum(len(d["annotations"]) for d in dicts)
    assert n == len(data["annotations"]) - 4
    text = caplog.text
    assert "skipped 2 item(s) with bbox with negative or zero size" in text
    assert "polygon with fewer than 3 points" in text and f"annotation id {ids[2]}" in text
    assert "category id not in 'categories'" in text and "category_id 77" in text
    assert f"annotation id {ids[0]}" in text


def test_register_and_filter_empty(shapes):
    json_file, image_root = shapes
    data = edit_json(json_file, lambda d: d.update(annotations=[a for a in d["annotations"] if a["image_id"] != 1]))
    usable = len({a["image_id"] for a in data["annotations"] if not a["iscrowd"]})
    assert usable < 6
    register_coco_instances("shapes_test_reg", {}, json_file, image_root)
    try:
        assert MetadataCatalog.get("shapes_test_reg").evaluator_type == "coco"
        assert len(get_detection_dataset_dicts(["shapes_test_reg"], filter_empty=False)) == 6
        assert len(get_detection_dataset_dicts(["shapes_test_reg"], filter_empty=True)) == usable  # crowd-only images go too
        with pytest.raises(KeyError, match="already registered"):
            register_coco_instances("shapes_test_reg", {}, json_file, image_root)
    finally:
        DatasetCatalog.remove("shapes_test_reg")
        MetadataCatalog.remove("shapes_test_reg")
    with pytest.raises(KeyError, match="not registered"):
        DatasetCatalog.get("shapes_test_reg")


def test_bundled_nuclei_dataset_is_registered():
    train = DatasetCatalog.get("nuclei_mini_train")
    val = DatasetCatalog.get("nuclei_mini_val")
    assert len(train) == 40 and len(val) == 12
    assert MetadataCatalog.get("nuclei_mini_train").thing_classes == ["nucleus"]
    assert sum(len(d["annotations"]) for d in train) == 1571
    assert not {d["file_name"] for d in train} & {d["file_name"] for d in val}
    assert all(os.path.isfile(d["file_name"]) for d in train + val)
