"""LVIS: registration (coco_url file names, frequencies, the record cache) and LVISEvaluator (hotcoco's LVIS mode),
which must give the `lvis` package's own numbers on the same detections."""

import json
import os
import uuid

import numpy as np
import pytest
import torch

from detgn.data import DatasetCatalog, MetadataCatalog, register_lvis_instances
from detgn.evaluation.lvis_evaluation import LVISEvaluator
from detgn.structures import Boxes, Instances

H, W = 60, 80


def _lvis_fixture(tmp_path):
    """5 images in val2017/, 3 categories (ids 1, 3, 5: rare, common, frequent), federated lists."""
    import cv2

    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    rng = np.random.RandomState(0)
    images, anns = [], []
    aid = 1
    for i in range(1, 6):
        cv2.imwrite(str(root / "val2017" / f"{i:012d}.png"), np.zeros((H, W, 3), np.uint8))
        images.append(
            {
                "id": i,
                "height": H,
                "width": W,
                "coco_url": f"http://images.cocodataset.org/val2017/{i:012d}.png",
                "neg_category_ids": [1] if i == 5 else [],
                "not_exhaustive_category_ids": [5] if i == 4 else [],
            }
        )
        for k in range(1 + i % 3):
            x, y = float(rng.randint(0, 40)), float(rng.randint(0, 25))
            w, h = float(rng.randint(10, 30)), float(rng.randint(10, 30))
            cat = [1, 3, 5, 5, 3][(i + k) % 5]
            anns.append(
                {
                    "id": aid,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
            aid += 1
    cats = [
        {"id": 1, "name": "aardvark", "frequency": "r", "synonyms": ["aardvark"]},
        {"id": 3, "name": "banjo", "frequency": "c", "synonyms": ["banjo"]},
        {"id": 5, "name": "cup", "frequency": "f", "synonyms": ["cup"]},
    ]
    path = tmp_path / "lvis_v1_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(path), str(root), anns


def _predictions(anns, image_id, contiguous):
    rng = np.random.RandomState(image_id)
    mine = [a for a in anns if a["image_id"] == image_id]
    boxes, classes, scores, masks = [], [], [], []
    for a in mine + mine[:1]:  # a duplicate as a false positive
        x, y, w, h = a["bbox"]
        dx, dy = rng.uniform(-3, 3, 2)
        boxes.append([x + dx, y + dy, x + w + dx, y + h + dy])
        classes.append(
            contiguous[a["category_id"]]
            if a is not mine[0] or rng.rand() < 0.7
            else (contiguous[a["category_id"]] + 1) % 3
        )
        scores.append(float(rng.uniform(0.3, 1.0)))
        m = torch.zeros(H, W, dtype=torch.bool)
        m[int(max(0, y + dy)) : int(y + h + dy), int(max(0, x + dx)) : int(x + w + dx)] = True
        masks.append(m)
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    inst.pred_masks = torch.stack(masks)
    return {"instances": inst}


def test_lvis_registration_and_evaluator_match_the_lvis_package(tmp_path, monkeypatch):
    from tests.evaluation.lvis_reference import reference_results

    monkeypatch.setenv("DETGN_CACHE_DIR", str(tmp_path / "cache"))
    json_file, root, anns = _lvis_fixture(tmp_path)
    name = f"lvis_test_{uuid.uuid4().hex}"
    register_lvis_instances(name, {}, json_file, root)
    try:
        records = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        assert len(records) == 5 and records[0]["file_name"] == os.path.join(root, "val2017", "000000000001.png")
        assert meta.thing_classes == ["aardvark", "banjo", "cup"] and meta.category_frequency == ["r", "c", "f"]
        assert meta.evaluator_type == "lvis" and type(records).__name__ == "RecordList"
        contiguous = meta.thing_dataset_id_to_contiguous_id
        ev = LVISEvaluator(name, tasks=("bbox", "segm"), distributed=False, output_dir=str(tmp_path / "out"))
        ev.reset()
        for r in records:
            ev.process([{"image_id": r["image_id"]}], [_predictions(anns, r["image_id"], contiguous)])
        got = ev.evaluate()
        written = json.load(open(tmp_path / "out" / "lvis_instances_results.json"))
        assert {d["category_id"] for d in written} <= {1, 3, 5}
        for task in ("bbox", "segm"):
            dets = [dict(d) for d in written]
            if task == "segm":
                for d in dets:
                    d.pop("bbox")
            ref = reference_results(json.load(open(json_file)), dets, task)
            for m in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"):
                assert got[task][m] == float(ref[m]) * 100, (task, m)  # the same numbers, to the last bit
            assert 0 < got[task]["AP"] < 100
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_lvis_refuses_another_backend(tmp_path, monkeypatch):
    from detgn.config import get_cfg
    from detgn.engine import DefaultTrainer
    from detgn.utils.errors import ConfigValueError

    monkeypatch.setenv("DETGN_CACHE_DIR", str(tmp_path / "cache"))
    json_file, root, _ = _lvis_fixture(tmp_path)
    name = f"lvis_test_{uuid.uuid4().hex}"
    register_lvis_instances(name, {}, json_file, root)
    try:
        cfg = get_cfg()
        cfg.TEST.EVALUATOR_BACKEND = "pycocotools"
        with pytest.raises(ConfigValueError, match="evaluated by hotcoco's LVIS mode only"):
            DefaultTrainer.build_evaluator(cfg, name, str(tmp_path / "out"))
        cfg.TEST.EVALUATOR_BACKEND = "hotcoco"
        assert isinstance(DefaultTrainer.build_evaluator(cfg, name, str(tmp_path / "out")), LVISEvaluator)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
