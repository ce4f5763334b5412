"""Panoptic pictures: draw_panoptic (stuff regions, things, legend), tools/demo.py on a Panoptic FPN and
tools/visualize_data.py on panoptic ground truth."""

import os

import cv2
import numpy as np
import torch

from detgn.utils.panoptic_visualizer import draw_panoptic, panoptic_to_parts, stuff_color

from tests.util import NARROW_MODEL, REPO, run_tool_here

CONFIG = os.path.join(REPO, "configs", "nuclei_panoptic.yaml")


def test_parts_and_drawing():
    ids = np.zeros((40, 60), np.int32)
    ids[:, :30] = 1  # stuff label 2
    ids[10:20, 35:50] = 2  # a thing
    segments = [
        {"id": 1, "isthing": False, "category_id": 2, "area": 1200},
        {"id": 2, "isthing": True, "category_id": 0, "score": 0.9},
    ]
    stuff, masks, classes, scores = panoptic_to_parts(ids, segments)
    assert (stuff[:, :30] == 2).all() and (stuff[:, 30:] == 0).all()
    assert masks.shape == (1, 40, 60) and masks[0].sum() == 150 and classes == [0] and scores == [0.9]
    image = np.full((40, 60, 3), 128, np.uint8)
    out = draw_panoptic(image, stuff, masks, classes, scores, stuff_names=["things", "a", "b"], score_low=0.5)
    assert out.shape == (40 + 22, 60, 3)  # a legend strip below
    tint = out[20, 10].astype(int) - 128
    expected = np.array(stuff_color(2)) - 128
    assert np.sign(tint).tolist() == np.sign(expected).tolist() and np.abs(tint).max() > 10  # stuff tinted
    assert (out[35, 55] == 128).all()  # neither stuff nor thing: untouched
    assert not (out[15, 40] == 128).all()  # the thing is drawn
    # the legend names the stuff present, with its colour
    legend = out[40:]
    assert (legend == np.array(stuff_color(2), np.uint8)).all(axis=-1).any()


def test_demo_draws_panoptic_output(tmp_path, capsys):
    src = os.path.join(REPO, "datasets", "nuclei_mini", "val")
    name = sorted(os.listdir(src))[0]
    args = ["--config-file", CONFIG, "--input", os.path.join(src, name), "--output", str(tmp_path / "out"),
            "--random-weights", *NARROW_MODEL, "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32", "INPUT.MIN_SIZE_TEST", "128",
            "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", "1"]  # fmt: skip
    torch.manual_seed(0)
    status, out, err = run_tool_here("demo", args, capsys)
    assert status == 0, err[-2000:]
    picture = cv2.imread(str(tmp_path / "out" / (os.path.splitext(name)[0] + "_pred.png")))
    original = cv2.imread(os.path.join(src, name))
    assert picture.shape[0] == original.shape[0] + 22  # the stuff legend
    assert not np.array_equal(picture[: original.shape[0]], original)  # stuff or things were drawn


def test_visualize_data_draws_panoptic_ground_truth(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DETGN_CACHE_DIR", str(tmp_path / "cache"))
    args = ["--config-file", CONFIG, "--output", str(tmp_path / "vis"), "--num", "1", "--source", "annotation"]
    status, out, err = run_tool_here("visualize_data", args, capsys)
    assert status == 0, err[-2000:]
    (picture,) = os.listdir(tmp_path / "vis")
    img = cv2.imread(str(tmp_path / "vis" / picture))
    from detgn.data import DatasetCatalog

    record = DatasetCatalog.get("nuclei_panoptic_train")[0]
    assert img.shape[:2] == (record["height"] + 22, record["width"])
    sem = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    original = cv2.imread(record["file_name"])
    background = sem == 2
    changed = np.abs(img[: record["height"]].astype(int) - original.astype(int)).sum(-1) > 0
    assert changed[background].mean() > 0.9  # the background stuff is tinted
