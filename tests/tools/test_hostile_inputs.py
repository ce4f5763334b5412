"""The rest of the hostile-user cases, each a one-line refusal or a warning that says what happened: a weights
file whose 'model' is not a dict, an impossible SLURM --time, a demo folder without images, evaluation of no
detections (undefined metrics stay undefined) and of duplicated results."""

import copy
import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch

from detgn.checkpoint import DetectionCheckpointer
from detgn.checkpoint.formats import WeightsFormatError
from tests.util import QUICK, REPO, tool_module

FIXTURE = os.path.join(REPO, "tests", "data", "coco_eval_fixture")
GT = os.path.join(FIXTURE, "instances_val2014_100.json")
RESULTS = os.path.join(FIXTURE, "instances_val2014_fakebbox100_results.json")


@pytest.mark.parametrize(
    "content,words",
    [
        ({"model": [1, 2, 3], "__author__": "Detectron2 Model Zoo"}, "its 'model' entry is a list"),
        ({"model": "weights"}, "its 'model' entry is a str"),
        ({"blobs": [1]}, "its 'blobs' entry is a list"),
        ({"state_dict": None}, "its 'state_dict' entry is a NoneType"),
        ({"model": {1: np.zeros(1, np.float32)}}, "tensor names must be strings"),
        ([1, 2], "holds a list"),
    ],
)
def test_weights_container_of_the_wrong_type(tmp_path, content, words):
    path = tmp_path / "w.pkl"
    with open(path, "wb") as f:
        pickle.dump(content, f)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(WeightsFormatError) as e:
        DetectionCheckpointer(model).load(str(path))
    assert words in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_weights_list_model_through_convert_weights(tmp_path, capsys):
    path = tmp_path / "d2.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": [1, 2], "__author__": "Detectron2 Model Zoo"}, f)
    status = tool_module("convert_weights").main([str(path), str(tmp_path / "out.pth"), "--config-file", QUICK])
    err = capsys.readouterr().err
    assert status == 2 and "its 'model' entry is a list" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "text,words",
    [
        ("1:99:99", "minutes 99 > 59"),
        ("0:59:60", "seconds 60 > 59"),
        ("5:60", "seconds 60 > 59"),
        ("1-24", "hours 24 > 23"),
        ("2-05:61", "minutes 61 > 59"),
    ],
)
def test_submit_time_sbatch_would_refuse(text, words):
    submit = tool_module("submit")
    with pytest.raises(submit.SubmitError, match=words):
        submit.parse_time_minutes(text)


def test_submit_time_edges_still_accepted():
    parse_time_minutes = tool_module("submit").parse_time_minutes
    assert [parse_time_minutes(t) for t in ("0:59:59", "1-23:59:59", "59:59", "600")] == [60, 2880, 60, 600]


def test_demo_on_a_folder_without_images(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no images here")
    status = tool_module("demo").main(
        ["--config-file", QUICK, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--random-weights"]
    )
    err = capsys.readouterr().err
    assert status == 2 and "holds no image or video" in err and not (tmp_path / "out").exists()


def _one_image_gt(tmp_path, area):
    data = json.load(open(GT))
    img = data["images"][0]
    anns = [dict(a, area=area, iscrowd=0) for a in data["annotations"] if a["image_id"] == img["id"]][:1]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": [img], "annotations": anns, "categories": data["categories"]}))
    return str(path)


def test_no_detections_leave_undefined_metrics_undefined(tmp_path, capsys):
    gt = _one_image_gt(tmp_path, area=50.0)  # one small object: APm, APl (and ARm, ARl) are undefined
    res = tmp_path / "empty.json"
    res.write_text("[]")
    stats = tool_module("evaluate_json").evaluate_json(gt, str(res), ["bbox"])["bbox"]
    names = tool_module("evaluate_json").STAT_NAMES
    got = dict(zip(names, stats))
    assert got["AP"] == got["APs"] == got["ARs"] == 0.0 and got["APm"] == got["APl"] == got["ARl"] == -1.0
    assert tool_module("evaluate_json").main(["--gt", gt, "--results", str(res)]) == 0
    captured = capsys.readouterr()
    assert "no bbox results" in captured.err and "APl nan" in captured.out and "APs 0.000" in captured.out


def test_exact_duplicates_are_warned_with_their_count(tmp_path, caplog):
    results = json.load(open(RESULTS))
    doubled = results + copy.deepcopy(results[:7])
    path = tmp_path / "merged.json"
    path.write_text(json.dumps(doubled))
    with caplog.at_level(logging.WARNING):
        tool_module("evaluate_json").evaluate_json(GT, str(path), ["bbox"])
    assert f"7 of the {len(doubled)} bbox results are exact duplicates" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        tool_module("evaluate_json").evaluate_json(GT, RESULTS, ["bbox"])
    assert "duplicates" not in caplog.text
