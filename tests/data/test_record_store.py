"""The record store and its cache: same records as the list of dicts, one build per machine (the other
processes do not open the json), invalidation by content, corrupted files rebuilt, same batches."""
import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from detgn.config import get_cfg
from detgn.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader, load_coco_json, register_coco_instances
from detgn.data import record_cache
from detgn.data.record_cache import cached_records
from detgn.data.record_store import RecordList, RecordStore, StoreCorruptError, write_records

from .shapes import make_shapes_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("DETGN_CACHE_DIR", str(tmp_path / "cache"))
    json_file, root = make_shapes_dataset(str(tmp_path / "shapes"), num_images=8, seed=9, image_size=(64, 96), crowd_every=4,
                                          polygons=False)
    name = f"shapes_store_{uuid.uuid4().hex}"
    register_coco_instances(name, {}, json_file, root)
    yield name, json_file, root, tmp_path / "cache"
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_store_records_equal_the_list(shapes, tmp_path):
    name, json_file, root, cache = shapes
    expected = load_coco_json(json_file, root)
    got = DatasetCatalog.get(name)
    assert isinstance(got, RecordList) and len(got) == len(expected)
    assert [dict(r) for r in got] == expected  # BoxMode restored, RLE strings, polygons, crowd flags
    assert got.num_instances.tolist() == [sum(1 for a in d["annotations"] if not a["iscrowd"]) for d in expected]
    assert got.heights.tolist() == [d["height"] for d in expected]
    got[0]["annotations"].clear()  # a decoded record is a fresh dict: the store is not changed
    assert got[0] == expected[0]
    assert got[2:5][0] == expected[2] and list(got.select(got.num_instances > 1)) == [d for d in expected if
                                                                                     sum(not a["iscrowd"] for a in d["annotations"]) > 1]
    assert MetadataCatalog.get(name).thing_classes == ["square", "disc"] or MetadataCatalog.get(name).thing_classes


def test_second_process_maps_the_store_without_opening_the_json(shapes, monkeypatch):
    name, json_file, root, cache = shapes
    monkeypatch.setattr(record_cache, "RACY_SECONDS", 0.0)  # the json was written a moment ago: trust its stat anyway
    first = DatasetCatalog.get(name)
    code = textwrap.dedent(f"""
        import builtins, json
        opened = []
        real_open = builtins.open
        def spy(f, *a, **k):
            opened.append(str(f))
            return real_open(f, *a, **k)
        from detgn.data import DatasetCatalog, MetadataCatalog, register_coco_instances
        builtins.open = spy
        register_coco_instances("x", {{}}, {json_file!r}, {root!r})
        recs = DatasetCatalog.get("x")
        builtins.open = real_open
        print(json.dumps({{"n": len(recs), "first": recs[0]["file_name"], "parsed_json": any(o == {json_file!r} for o in opened),
                          "classes": MetadataCatalog.get("x").thing_classes, "type": type(recs).__name__}}))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=dict(os.environ, DETGN_CACHE_DIR=str(cache)),
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"n": len(first), "first": first[0]["file_name"], "parsed_json": False,
                   "classes": MetadataCatalog.get(name).thing_classes, "type": "RecordList"}


def test_cache_hit_invalidation_and_corruption(shapes, caplog):
    name, json_file, root, cache = shapes
    calls = []

    def build():
        calls.append(1)
        return load_coco_json(json_file, root), {"v": 1}

    a, _ = cached_records("t", build, [json_file])
    b, meta = cached_records("t", build, [json_file])
    assert len(calls) == 1 and meta == {"v": 1} and list(a) == list(b)  # hit: not rebuilt
    data = json.load(open(json_file))
    data["annotations"] = data["annotations"][:-1]
    with open(json_file, "w") as f:
        json.dump(data, f)
    c, _ = cached_records("t", build, [json_file])
    assert len(calls) == 2 and sum(len(r["annotations"]) for r in c) == sum(len(r["annotations"]) for r in a) - 1  # changed content
    path = c.stores[0].path
    raw = bytearray(open(path, "rb").read())
    raw[-5] ^= 0xFF  # flip a byte of the data
    open(path, "wb").write(bytes(raw))
    with caplog.at_level(logging.WARNING):
        d, _ = cached_records("t", build, [json_file])
    assert len(calls) == 3 and "checksum mismatch" in caplog.text and "rebuilding" in caplog.text
    assert list(d) == load_coco_json(json_file, root)  # (c maps the file altered in place; detgn only ever replaces it)
    open(path, "wb").write(bytes(raw[: len(raw) // 2]))  # truncated
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cached_records("t", build, [json_file])
    assert len(calls) == 4 and "truncated" in caplog.text


def test_store_refuses_what_is_not_one(tmp_path):
    (tmp_path / "x.rec").write_bytes(b"not a record file at all")
    with pytest.raises(StoreCorruptError):
        RecordStore(str(tmp_path / "x.rec"))
    write_records(str(tmp_path / "y.rec"), [{"file_name": "a", "height": 2, "width": 3}], key="k1")
    with pytest.raises(StoreCorruptError, match="another input"):
        RecordStore(str(tmp_path / "y.rec"), expected_key="k2")
    assert RecordStore(str(tmp_path / "y.rec"), expected_key="k1")[0] == {"file_name": "a", "height": 2, "width": 3}


def test_same_batches_from_the_store_and_the_list(shapes, monkeypatch):
    """Exact resume and per-sample augmentation seeds do not depend on where the records live."""
    name, json_file, root, cache = shapes
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.DATASETS.TRAIN = (name,)
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.INPUT.MIN_SIZE_TRAIN = (64, 80)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SEED = 11

    def summary(loader, n):
        return [[(d["image_id"], tuple(d["image"].shape), int(d["image"].sum()), int(d["instances"].gt_masks.tensor.sum()))
                 for d in b] for b in itertools.islice(loader, n)]

    from_store = summary(build_detection_train_loader(cfg), 5)
    assert isinstance(DatasetCatalog.get(name), RecordList)
    monkeypatch.setenv("DETGN_RECORD_CACHE", "0")
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    register_coco_instances(name, {}, json_file, root)
    assert isinstance(DatasetCatalog.get(name), list)
    assert summary(build_detection_train_loader(cfg), 5) == from_store
    cfg.DATALOADER.NUM_WORKERS = 2
    monkeypatch.setenv("DETGN_RECORD_CACHE", "1")
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    register_coco_instances(name, {}, json_file, root)
    assert summary(build_detection_train_loader(cfg, start_iter=2), 3) == from_store[2:]  # workers map the file too
    assert np.array_equal(DatasetCatalog.get(name).indices, np.arange(len(DatasetCatalog.get(name))))


def test_prepare_builds_the_cache_ahead(shapes, capsys):
    from detgn.data.prepare import main

    name, json_file, root, cache = shapes
    assert main(["--json", json_file, "--image-root", root]) == 0
    out = capsys.readouterr().out
    assert "8 records in " + str(cache) in out
    built = os.listdir(cache)
    assert isinstance(DatasetCatalog.get(name), RecordList) and os.listdir(cache) == built  # the job maps what prepare built
    assert main(["no_such_dataset"]) == 2 and "no_such_dataset" in capsys.readouterr().err
