"""The record cache under a hostile but realistic user: a same-size edit with its mtime put back, a header altered
in place, a cache folder that cannot take the file, Ctrl-C during the build, and the switch's spellings."""
import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from detgn.data import DatasetCatalog, MetadataCatalog, load_coco_json, register_coco_instances
from detgn.data import record_cache
from detgn.data.record_cache import cache_enabled, cached_records
from detgn.data.record_store import RecordList
from detgn.utils.errors import UserInputError

from .shapes import make_shapes_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("DETGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DETGN_RECORD_CACHE", raising=False)
    json_file, root = make_shapes_dataset(str(tmp_path / "shapes"), num_images=6, seed=9, image_size=(64, 96), crowd_every=4,
                                          polygons=False)
    name = f"shapes_hostile_{uuid.uuid4().hex}"
    register_coco_instances(name, {}, json_file, root)
    yield name, json_file, root, tmp_path / "cache"
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _edit_keeping_size_and_mtime(json_file, old=b'"iscrowd": 0', new=b'"iscrowd": 1', count=2):
    """What `touch -r`, `cp -p` or `rsync -t` leave: other bytes, the same size, the old mtime."""
    st = os.stat(json_file)
    raw = open(json_file, "rb").read()
    assert raw.count(old) >= count and len(old) == len(new)
    edited = raw.replace(old, new, count)
    with open(json_file, "r+b") as f:
        f.write(edited)
    os.utime(json_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(json_file)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def _instances(records):
    return sum(1 for r in records for a in r["annotations"] if not a.get("iscrowd", 0))


@pytest.mark.parametrize("racy", [False, True], ids=["stat-trusted", "built-right-after-an-edit"])
def test_same_size_edit_with_mtime_put_back_is_never_served(shapes, monkeypatch, racy):
    name, json_file, root, cache = shapes
    if not racy:  # the file is older than the window: its stat is recorded and trusted on the next start
        monkeypatch.setattr(record_cache, "RACY_SECONDS", 0.0)
    before = DatasetCatalog.get(name)
    assert isinstance(before, RecordList)
    _edit_keeping_size_and_mtime(json_file)
    after = DatasetCatalog.get(name)
    expected = load_coco_json(json_file, root)
    assert list(after) == expected and _instances(after) == _instances(before) - 2
    assert after.stores[0].path == before.stores[0].path  # the same cache file, rebuilt


def _train_one_step(name, out, capsys):
    """tools/train_net.py in this process: one iteration of the narrow model on the dataset `name`; its log.txt."""
    from tests.util import TINY_MODEL, tool_module

    status = tool_module("train_net").cli([
        "--config-file", os.path.join(REPO, "configs", "quick_schedules", "mask_rcnn_R_50_FPN_gn_instant_test.yaml"),
        *TINY_MODEL, "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "MODEL.ROI_HEADS.NUM_CLASSES", "2",
        "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "1", "INPUT.MIN_SIZE_TRAIN", "(64,)", "TEST.EVAL_PERIOD", "0",
        "TEST.VIS_PERIOD_IMAGES", "0", "OUTPUT_DIR", str(out),
    ])
    assert status == 0, capsys.readouterr().err[-2000:]
    return (out / "log.txt").read_text()


def test_same_size_edit_reaches_train_net(shapes, monkeypatch, tmp_path, capsys):
    """Through tools/train_net.py: the data line of log.txt counts the edited file's instances."""
    name, json_file, root, cache = shapes
    monkeypatch.setattr(record_cache, "RACY_SECONDS", 0.0)

    def counted(records):  # as the trainer's data line counts: annotations of the images with an instance
        return sum(len(r["annotations"]) for r in records if _instances([r]))

    before = counted(DatasetCatalog.get(name))  # cached before the edit
    _edit_keeping_size_and_mtime(json_file, b'"image_id": 1,', b'"image_id": 9,', 1)  # no image 9: one skipped
    log = _train_one_step(name, tmp_path / "run", capsys)
    after = counted(load_coco_json(json_file, root))
    assert after != before and f"images, {after} instances" in log


def test_train_net_trains_with_an_unusable_cache_folder(shapes, monkeypatch, tmp_path, capsys):
    name, json_file, root, cache = shapes
    monkeypatch.setenv("DETGN_CACHE_DIR", "/proc/detgn-records")
    log = _train_one_step(name, tmp_path / "run", capsys)
    assert "Record cache folder /proc/detgn-records cannot be used" in log and "Starting training" in log


def test_header_altered_in_place_is_rebuilt(shapes, caplog):
    name, json_file, root, cache = shapes
    records = DatasetCatalog.get(name)
    path = records.stores[0].path
    classes = MetadataCatalog.get(name).thing_classes
    raw = open(path, "rb").read()
    old = json.dumps(classes[0]).encode()
    swapped = old[:1] + old[1:-1][::-1] + old[-1:]  # same length, other bytes: "square" -> "erauqs"
    assert raw.count(old) == 1 and swapped != old
    open(path, "wb").write(raw.replace(old, swapped))
    with caplog.at_level(logging.WARNING):
        again = DatasetCatalog.get(name)
    assert "header checksum mismatch" in caplog.text and "rebuilding" in caplog.text
    assert again.stores[0].metadata["thing_classes"] == classes and list(again) == list(records)


def _unusable(kind, tmp_path):
    if kind == "path-through-a-file":
        (tmp_path / "afile").write_text("x")
        return str(tmp_path / "afile" / "records")
    if kind == "proc":
        return "/proc/detgn-records"
    return "/sys/detgn-records"


@pytest.mark.parametrize("kind", ["path-through-a-file", "proc", "sys"])
def test_unusable_cache_folder_falls_back_to_memory(shapes, monkeypatch, tmp_path, caplog, kind):
    name, json_file, root, cache = shapes
    folder = _unusable(kind, tmp_path)
    monkeypatch.setenv("DETGN_CACHE_DIR", folder)
    with caplog.at_level(logging.WARNING):
        records = DatasetCatalog.get(name)
    assert isinstance(records, list) and records == load_coco_json(json_file, root)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    line = warnings[0].getMessage()
    assert folder in line and "DETGN_CACHE_DIR" in line and "DETGN_RECORD_CACHE=0" in line and "\n" not in line


def test_valid_cache_is_read_without_a_lock_file(shapes, monkeypatch):
    """A shared read-only cache: a valid file is mapped without creating (or needing) the lock file; here the
    lock cannot be created at all (its open raises PermissionError, as in a read-only folder)."""
    name, json_file, root, cache = shapes
    first = DatasetCatalog.get(name)
    lock = first.stores[0].path + ".lock"
    os.remove(lock)
    real_open = open

    def no_new_files(path, *a, **k):
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", no_new_files)
    again = DatasetCatalog.get(name)
    assert isinstance(again, RecordList) and list(again) == list(first) and not os.path.exists(lock)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode 0555 folder: the read-only case needs a user")
def test_read_only_folder_really_read_only(shapes, caplog):
    name, json_file, root, cache = shapes
    first = DatasetCatalog.get(name)
    os.remove(first.stores[0].path + ".lock")
    os.chmod(cache, 0o555)
    try:
        assert list(DatasetCatalog.get(name)) == list(first)
        _edit_keeping_size_and_mtime(json_file)  # stale now: rebuilt in memory, one warning
        with caplog.at_level(logging.WARNING):
            records = DatasetCatalog.get(name)
        assert isinstance(records, list) and str(cache) in caplog.text
    finally:
        os.chmod(cache, 0o755)


def test_full_disk_during_the_build_falls_back_and_leaves_no_file(shapes):
    """`ulimit -f` (the same path as a full disk: the write raises OSError): one warning, the records in memory,
    no record file and no temp file in the cache folder."""
    name, json_file, root, cache = shapes
    code = textwrap.dedent(f"""
        import resource, json, logging, os
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        from detgn.data import DatasetCatalog, register_coco_instances
        register_coco_instances("x", {{}}, {json_file!r}, {root!r})
        os.makedirs({str(cache)!r}, exist_ok=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
        recs = DatasetCatalog.get("x")
        print(json.dumps({{"type": type(recs).__name__, "n": len(recs)}}))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, DETGN_CACHE_DIR=str(cache)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"type": "list", "n": len(load_coco_json(json_file, root))}
    assert r.stderr.count("WARNING") == 1 and "File too large" in r.stderr and "DETGN_CACHE_DIR" in r.stderr
    assert [n for n in os.listdir(cache) if not n.endswith(".lock")] == []


def test_ctrl_c_during_the_build_says_so_and_leaves_nothing(shapes, caplog, monkeypatch):
    name, json_file, root, cache = shapes
    from detgn.data import record_store

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(record_store, "dumps", interrupted)  # Ctrl-C while the records are being written
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        cached_records(name, lambda: (load_coco_json(json_file, root), {}), [json_file])
    assert "Interrupted while writing the record cache" in caplog.text and "no partial file" in caplog.text
    assert [n for n in os.listdir(cache) if not n.endswith(".lock")] == []


def test_ctrl_c_in_prepare_is_one_line(shapes, capsys, monkeypatch):
    from detgn.data import prepare

    name, json_file, root, cache = shapes

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("detgn.data.record_store.dumps", interrupted)
    assert prepare.main([name]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("value,on", [("0", False), ("False", False), ("OFF", False), (" no ", False), ("1", True),
                                      ("TRUE", True), ("On", True), ("yes", True), ("", True)])
def test_switch_spellings(monkeypatch, value, on):
    monkeypatch.setenv("DETGN_RECORD_CACHE", value)
    assert cache_enabled() is on


@pytest.mark.parametrize("value", ["maybe", "2", "disable"])
def test_unreadable_switch_is_refused_in_one_line(monkeypatch, value):
    monkeypatch.setenv("DETGN_RECORD_CACHE", value)
    with pytest.raises(UserInputError, match="DETGN_RECORD_CACHE") as e:
        cache_enabled()
    assert "\n" not in str(e.value)


def test_prepare_into_an_unusable_folder_fails_in_one_line(shapes, monkeypatch, tmp_path, capsys):
    from detgn.data import prepare

    name, json_file, root, cache = shapes
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("DETGN_CACHE_DIR", str(tmp_path / "afile" / "records"))
    assert prepare.main([name]) == 2
    err = capsys.readouterr().err
    assert "no record file could be written" in err and "Traceback" not in err
