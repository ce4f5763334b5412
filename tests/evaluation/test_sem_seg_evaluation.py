"""Semantic segmentation metrics on constructed cases, against values computed by hand (detectron2's definitions:
detgn/evaluation/sem_seg_evaluation.py), the ignore label, classes without ground truth, bad ground truth in one
line, label PNGs read from disk, and confusion matrices summed over processes."""

import math

import cv2
import numpy as np
import pytest
import torch

from detgn.evaluation.sem_seg_evaluation import SemSegEvaluator, SemSegInputError, sem_seg_metrics, update_confusion


def _logits(pred, c):
    """(C, H, W) logits whose argmax is `pred`."""
    return torch.nn.functional.one_hot(torch.as_tensor(pred), c).permute(2, 0, 1).float()


def test_hand_computed_case():
    # 3 classes; 4x4 image; 255 = ignore
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2], [2, 2, 0, 0], [2, 2, 2, 1]])
    ev = SemSegEvaluator(3, class_names=["a", "b", "c"], distributed=False)
    ev.process([{"sem_seg": torch.as_tensor(gt)}], [{"sem_seg": _logits(pred, 3)}])
    r = ev.evaluate()["sem_seg"]
    # over the 13 labelled pixels: class a gt 4, pred 4 (3 right + 1 at a class-c pixel), tp 3 -> IoU 3/5, ACC 3/4
    # class b: gt 4, pred 4 (3 right, 1 at class a), tp 3 -> IoU 3/5, ACC 3/4; class c: gt 5, pred 5, tp 4 ->
    # IoU 4/6, ACC 4/5 (predictions on ignored pixels count nowhere)
    iou = [3 / 5, 3 / 5, 4 / 6]
    acc = [3 / 4, 3 / 4, 4 / 5]
    assert r["IoU-a"] == pytest.approx(100 * iou[0]) and r["IoU-c"] == pytest.approx(100 * iou[2])
    assert r["mIoU"] == pytest.approx(100 * sum(iou) / 3)
    assert r["fwIoU"] == pytest.approx(100 * (4 * iou[0] + 4 * iou[1] + 5 * iou[2]) / 13)
    assert r["mACC"] == pytest.approx(100 * sum(acc) / 3) and r["ACC-b"] == pytest.approx(75.0)
    assert r["pACC"] == pytest.approx(100 * 10 / 13)


def test_class_without_ground_truth_is_nan_and_left_out():
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 2], [1, 1]])  # class 2 predicted once, never in the ground truth
    conf = np.zeros((4, 4), np.int64)
    update_confusion(conf, pred, gt, 255)
    r = sem_seg_metrics(conf, ["a", "b", "c"])
    assert math.isnan(r["IoU-c"]) and math.isnan(r["ACC-c"])
    assert r["mIoU"] == pytest.approx(100 * (1 / 2 + 1) / 2) and r["mACC"] == pytest.approx(100 * (1 / 2 + 1) / 2)
    assert r["pACC"] == pytest.approx(75.0)


def test_bad_ground_truth_is_one_line(tmp_path):
    conf = np.zeros((3, 3), np.int64)
    with pytest.raises(SemSegInputError, match="x.png: ground-truth labels \\[7\\] are neither classes 0..1"):
        update_confusion(conf, np.zeros((2, 2), int), np.array([[0, 7], [1, 255]]), 255, "x.png")
    with pytest.raises(SemSegInputError, match="must match"):
        update_confusion(conf, np.zeros((2, 3), int), np.zeros((2, 2), int), 255, "y.png")
    ev = SemSegEvaluator(2, distributed=False)
    with pytest.raises(SemSegInputError, match="missing or not an image"):
        ev.process([{"sem_seg_file_name": str(tmp_path / "none.png")}], [{"sem_seg": torch.zeros(2, 2, 2)}])
    assert conf.sum() == 0  # nothing half-counted


def test_label_png_from_disk_and_processes_summed(tmp_path, monkeypatch):
    from detgn.utils import comm

    gt = np.array([[0, 1], [1, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "gt.png"), gt)
    pred = np.array([[0, 1], [0, 1]])
    one = SemSegEvaluator(2, distributed=False)
    for _ in range(2):
        one.process([{"sem_seg_file_name": str(tmp_path / "gt.png")}], [{"sem_seg": _logits(pred, 2)}])
    expected = one.evaluate()["sem_seg"]
    # two processes with one image each: the main process sums both matrices (all_gather stood in for here)
    part = SemSegEvaluator(2, distributed=True)
    part.process([{"sem_seg_file_name": str(tmp_path / "gt.png")}], [{"sem_seg": _logits(pred, 2)}])
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "synchronize", lambda: None)
    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    monkeypatch.setattr(comm, "all_gather", lambda x: [x, x.copy()])
    assert part.evaluate()["sem_seg"] == expected
    assert expected["pACC"] == pytest.approx(100 * 4 / 6)


def test_trainer_builds_it_for_sem_seg_datasets():
    from detgn.config import get_cfg
    from detgn.data import MetadataCatalog
    from detgn.engine import DefaultTrainer

    MetadataCatalog.get("semseg_probe").set(evaluator_type="sem_seg", stuff_classes=["things", "sky", "grass"])
    try:
        cfg = get_cfg()
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
        ev = DefaultTrainer.build_evaluator(cfg, "semseg_probe", output_folder="/tmp/unused")
        assert isinstance(ev, SemSegEvaluator) and ev._names == ["things", "sky", "grass"] and ev._ignore == 255
    finally:
        MetadataCatalog.remove("semseg_probe")
