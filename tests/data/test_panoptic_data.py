"""COCO panoptic data: the semantic PNGs of prepare_panoptic (values, parallel = serial, resume, refusals), the
one-line refusals of bad panoptic input, the panoptic_separated records (through the record cache) and the
mapper's "sem_seg"."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detgn.data import DatasetCatalog, MetadataCatalog
from detgn.data.datasets.coco_panoptic import register_coco_panoptic_separated
from detgn.data.errors import DatasetFormatError, DatasetNotFoundError
from detgn.data.prepare_panoptic import MANIFEST, PanopticPrepareError, main, prepare
from detgn.evaluation.panoptic_evaluation import id2rgb
from tests.util import edit_json

# things 1 (a) and 5 (b); stuff 7 (sky) and 3 (road): stuff labels in id order -> road 1, sky 2
CATS = [
    {"id": 1, "name": "a", "isthing": 1},
    {"id": 5, "name": "b", "isthing": 1},
    {"id": 7, "name": "sky", "isthing": 0},
    {"id": 3, "name": "road", "isthing": 0},
]


def _ids(i):
    """(6, 8) segment ids of image i: top rows sky (40), bottom rows road (41), a thing (10 + i) and void."""
    ids = np.zeros((6, 8), np.uint32)
    ids[:2] = 40
    ids[4:] = 41
    ids[2:4, 1:4] = 10 + i
    ids[2:4, 6:] = 0  # void
    return ids


def make_panoptic(root, n=3):
    """n images with their instance json, panoptic json + PNGs; returns the paths."""
    root = str(root)
    for d in ("images", "panoptic"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    images, pan_anns, inst_anns = [], [], []
    for i in range(n):
        Image.fromarray(np.full((6, 8, 3), 90 + i, np.uint8)).save(os.path.join(root, "images", f"im{i}.png"))
        ids = _ids(i)
        Image.fromarray(id2rgb(ids)).save(os.path.join(root, "panoptic", f"im{i}.png"))
        images.append({"id": i + 1, "file_name": f"im{i}.png", "height": 6, "width": 8})
        cat = 1 if i % 2 == 0 else 5
        pan_anns.append(
            {
                "image_id": i + 1,
                "file_name": f"im{i}.png",
                "segments_info": [
                    {"id": 40, "category_id": 7, "iscrowd": 0, "area": 16},
                    {"id": 41, "category_id": 3, "iscrowd": 0, "area": 16},
                    {"id": 10 + i, "category_id": cat, "iscrowd": 0, "area": 6},
                ],
            }
        )
        inst_anns.append(
            {"id": i + 1, "image_id": i + 1, "category_id": cat, "bbox": [1, 2, 3, 2], "area": 6, "iscrowd": 0,
             "segmentation": [[1, 2, 4, 2, 4, 4, 1, 4]]}
        )
    pan_json = os.path.join(root, "panoptic.json")
    inst_json = os.path.join(root, "instances.json")
    with open(pan_json, "w") as f:
        json.dump({"images": images, "annotations": pan_anns, "categories": CATS}, f)
    with open(inst_json, "w") as f:
        json.dump(
            {"images": images, "annotations": inst_anns,
             "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}]},
            f,
        )
    return pan_json, os.path.join(root, "panoptic"), inst_json, os.path.join(root, "images")




def test_semantic_values(tmp_path):
    pan_json, pan_root, _, _ = make_panoptic(tmp_path)
    out = tmp_path / "sem"
    r = prepare(pan_json, pan_root, str(out), workers=1)
    assert r["written"] == 3 and r["kept"] == 0
    sem = np.asarray(Image.open(out / "im0.png"))
    assert sem.dtype == np.uint8 and sem.shape == (6, 8)
    expected = np.full((6, 8), 255, np.uint8)
    expected[:2] = 2  # sky: the second stuff id (7 > 3)
    expected[4:] = 1  # road
    expected[2:4, 1:4] = 0  # a thing
    assert (sem == expected).all()


def test_parallel_equals_serial(tmp_path):
    pan_json, pan_root, _, _ = make_panoptic(tmp_path, n=6)
    prepare(pan_json, pan_root, str(tmp_path / "one"), workers=1)
    prepare(pan_json, pan_root, str(tmp_path / "two"), workers=2)
    for i in range(6):
        a = np.asarray(Image.open(tmp_path / "one" / f"im{i}.png"))
        b = np.asarray(Image.open(tmp_path / "two" / f"im{i}.png"))
        assert (a == b).all()


def test_resume_and_refusal_to_overwrite(tmp_path, capsys):
    pan_json, pan_root, _, _ = make_panoptic(tmp_path)
    out = tmp_path / "sem"
    prepare(pan_json, pan_root, str(out), workers=1)
    os.remove(out / "im1.png")
    before = os.stat(out / "im0.png").st_mtime_ns
    r = prepare(pan_json, pan_root, str(out), workers=1)  # resumed: only the missing one
    assert (r["written"], r["kept"]) == (1, 2) and os.stat(out / "im0.png").st_mtime_ns == before
    # another json's folder: refused, nothing touched
    edit_json(pan_json, lambda d: d["categories"].append({"id": 9, "name": "grass", "isthing": 0}))
    with pytest.raises(PanopticPrepareError, match="made from another panoptic json"):
        prepare(pan_json, pan_root, str(out), workers=1)
    assert os.stat(out / "im0.png").st_mtime_ns == before
    # files this tool did not write: refused (CLI: one line, exit 2); --overwrite writes
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.png").write_bytes(b"x")
    args = ["--panoptic-json", pan_json, "--panoptic-root", pan_root, "--output", str(foreign), "--workers", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not written by this tool" in err and err.count("\n") == 1
    assert (foreign / "mine.png").read_bytes() == b"x"
    assert main(args + ["--overwrite"]) == 0
    assert (foreign / "im2.png").exists() and (foreign / MANIFEST).exists()


@pytest.mark.parametrize(
    "case, words",
    [
        ("stray_id", "segment id(s) [12] are in the PNG but not in its segments_info"),
        ("size", "6x8 (h x w) but its image entry says 7x8"),
        ("category", "has category_id 99, not in 'categories'"),
        ("missing_png", "panoptic PNG missing"),
        ("duplicate", "segment id 40 appears twice"),
    ],
)
def test_bad_panoptic_input_is_one_line(tmp_path, capsys, case, words):
    pan_json, pan_root, _, _ = make_panoptic(tmp_path)
    if case == "stray_id":
        edit_json(pan_json, lambda d: d["annotations"][2]["segments_info"].pop())
    elif case == "size":
        edit_json(pan_json, lambda d: d["images"][1].update(height=7))
    elif case == "category":
        edit_json(pan_json, lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99))
    elif case == "missing_png":
        os.remove(os.path.join(pan_root, "im1.png"))
    elif case == "duplicate":
        edit_json(pan_json, lambda d: d["annotations"][0]["segments_info"][1].update(id=40))
    rc = main(["--panoptic-json", pan_json, "--panoptic-root", pan_root, "--output", str(tmp_path / "s"), "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and err.count("\n") == 1, err


def _register(tmp_path, name, sem_root=None):
    pan_json, pan_root, inst_json, img_root = make_panoptic(tmp_path)
    sem_root = sem_root or str(tmp_path / "sem")
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    register_coco_panoptic_separated(name, {}, img_root, pan_root, pan_json, sem_root, inst_json)
    return pan_json, pan_root, inst_json, sem_root


def test_records_through_the_record_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DETGN_CACHE_DIR", str(tmp_path / "cache"))
    pan_json, pan_root, _, sem_root = _register(tmp_path, "pan_test_records")
    prepare(pan_json, pan_root, sem_root, workers=1)
    records = DatasetCatalog.get("pan_test_records")
    assert type(records).__name__ == "RecordList"  # memory-mapped, as instance data
    r = records[0]
    assert r["sem_seg_file_name"] == os.path.join(sem_root, "im0.png")
    assert r["pan_seg_file_name"] == os.path.join(pan_root, "im0.png")
    assert {s["id"] for s in r["segments_info"]} == {40, 41, 10}
    meta = MetadataCatalog.get("pan_test_records")
    assert meta.stuff_classes == ["things", "road", "sky"]
    assert meta.stuff_dataset_id_to_contiguous_id == {0: 0, 3: 1, 7: 2}
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 5: 1}
    assert meta.evaluator_type == "coco_panoptic_seg"
    # another name on the same files (as another process would) maps the same file and gets the metadata from it
    if "pan_test_records2" in DatasetCatalog:
        DatasetCatalog.remove("pan_test_records2")
    register_coco_panoptic_separated(
        "pan_test_records2", {}, str(tmp_path / "images"), pan_root, pan_json, sem_root, str(tmp_path / "instances.json")
    )
    again = DatasetCatalog.get("pan_test_records2")
    assert [s.path for s in again.stores] == [s.path for s in records.stores]
    assert MetadataCatalog.get("pan_test_records2").stuff_classes == ["things", "road", "sky"]


def test_registration_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("DETGN_RECORD_CACHE", "0")
    pan_json, pan_root, inst_json, sem_root = _register(tmp_path, "pan_test_refuse")
    with pytest.raises(DatasetNotFoundError, match="python -m detgn.data.prepare_panoptic --panoptic-json"):
        DatasetCatalog.get("pan_test_refuse")  # no semantic folder yet
    prepare(pan_json, pan_root, sem_root, workers=1)
    os.remove(os.path.join(sem_root, "im2.png"))
    with pytest.raises(DatasetNotFoundError, match=r"1 semantic label PNG\(s\) missing .* \(first: im2.png\)"):
        DatasetCatalog.get("pan_test_refuse")
    prepare(pan_json, pan_root, sem_root, workers=1)
    edit_json(pan_json, lambda d: d["categories"].append({"id": 8, "name": "c", "isthing": 1}))
    with pytest.raises(DatasetFormatError, match="thing categories .* differ from those of"):
        DatasetCatalog.get("pan_test_refuse")
    edit_json(pan_json, lambda d: (d["categories"].pop(), d["annotations"].pop()))
    with pytest.raises(DatasetFormatError, match=r"no panoptic annotation for 1 image\(s\)"):
        DatasetCatalog.get("pan_test_refuse")


def test_mapper_sem_seg_follows_the_image(tmp_path, monkeypatch):
    from detgn.config import get_cfg
    from detgn.data.dataset_mapper import DatasetMapper
    from detgn.data.detection_utils import SizeMismatchError
    from detgn.data.transforms import FixedSizeCrop, RandomFlip, ResizeShortestEdge

    monkeypatch.setenv("DETGN_RECORD_CACHE", "0")
    pan_json, pan_root, _, sem_root = _register(tmp_path, "pan_test_mapper")
    prepare(pan_json, pan_root, sem_root, workers=1)
    record = DatasetCatalog.get("pan_test_mapper")[0]
    sem = np.asarray(Image.open(record["sem_seg_file_name"])).astype(np.int64)
    cfg = get_cfg()
    # x2 resize, always flipped: nearest-neighbour labels flipped with the image
    augs = [ResizeShortestEdge((12, 12), 100, "choice"), RandomFlip(prob=1.0)]
    mapper = DatasetMapper(cfg, True)
    mapper.augmentations = augs
    out = mapper(record, np.random.RandomState(0))
    expected = np.repeat(np.repeat(sem, 2, 0), 2, 1)[:, ::-1]
    assert out["sem_seg"].dtype == torch.int64 and (out["sem_seg"].numpy() == expected).all()
    assert out["image"].shape[1:] == out["sem_seg"].shape
    # padding (large-scale jitter's crop to a larger size) is ignored, not "things" (0)
    mapper.augmentations = [FixedSizeCrop((10, 12))]
    out = mapper(record, np.random.RandomState(0))
    assert (out["sem_seg"][6:] == 255).all() and (out["sem_seg"][:, 8:] == 255).all()
    assert (out["sem_seg"][:6, :8].numpy() == sem).all()
    # at inference the path stays for the evaluator
    test = DatasetMapper(cfg, False)(record)
    assert "sem_seg" not in test and test["sem_seg_file_name"] == record["sem_seg_file_name"]
    # a label map of another size: the size error training skips and counts
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(record["sem_seg_file_name"])
    with pytest.raises(SizeMismatchError, match="Semantic labels .* are 5x8"):
        mapper(record, np.random.RandomState(0))
