"""Semantic segmentation metrics (COCO-Stuff's, with detectron2's definitions): mIoU, fwIoU, mACC, pACC.

One confusion matrix over every pixel of every image, (C + 1) x (C + 1): rows the predicted class, columns the
ground truth, the last column the ignored pixels (IGNORE_VALUE), which count nowhere. Per class k:
    IoU_k = TP_k / (GT_k + P_k - TP_k),  ACC_k = TP_k / GT_k
over the classes with ground-truth pixels (GT_k > 0; others are nan and left out of the means);
    mIoU = mean IoU_k,  fwIoU = sum_k GT_k / sum GT * IoU_k,  mACC = mean ACC_k,  pACC = sum TP / sum GT.
Percent, as the other evaluators.
"""

import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from detgn.utils import comm
from detgn.utils.errors import UserInputError

from .evaluator import DatasetEvaluator

__all__ = ["SemSegEvaluator", "SemSegInputError", "update_confusion", "sem_seg_metrics"]

logger = logging.getLogger(__name__)


class SemSegInputError(UserInputError, ValueError):
    """A ground-truth label map that cannot be scored (missing, another size, a label outside the classes)."""


def update_confusion(conf: np.ndarray, pred: np.ndarray, gt: np.ndarray, ignore_label: int, where: str = "") -> None:
    """Add one image to the (C + 1) x (C + 1) int64 matrix `conf` in place: pred and gt (H, W) integer labels."""
    c = conf.shape[0] - 1
    if pred.shape != gt.shape:
        raise SemSegInputError(
            f"{where}: ground truth of {gt.shape} pixels, prediction of {pred.shape}; they must match"
        )
    gt = gt.astype(np.int64, copy=True)
    gt[gt == ignore_label] = c
    bad = (gt < 0) | (gt > c)
    if bad.any():
        labels = sorted(set(np.unique(gt[bad]).tolist()))[:5]
        raise SemSegInputError(
            f"{where}: ground-truth labels {labels} are neither classes 0..{c - 1} nor the ignore label {ignore_label}"
        )
    conf += np.bincount((c + 1) * pred.reshape(-1).astype(np.int64) + gt.reshape(-1), minlength=conf.size).reshape(
        conf.shape
    )


def sem_seg_metrics(conf: np.ndarray, class_names: Sequence[str]) -> Dict[str, float]:
    """The metrics of the module docstring from a confusion matrix (percent; nan for classes without ground truth)."""
    c = conf.shape[0] - 1
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:-1, :-1].sum(axis=0).astype(float)
    pos_pred = conf[:-1, :-1].sum(axis=1).astype(float)
    acc, iou = np.full(c, np.nan), np.full(c, np.nan)
    valid = pos_gt > 0
    acc[valid] = tp[valid] / pos_gt[valid]
    union = pos_gt + pos_pred - tp
    iou_valid = valid & (union > 0)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    total = pos_gt.sum()
    res = OrderedDict()
    res["mIoU"] = 100 * float(iou[iou_valid].mean()) if iou_valid.any() else float("nan")
    res["fwIoU"] = 100 * float((iou[iou_valid] * pos_gt[iou_valid] / total).sum()) if total else float("nan")
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * float(iou[i])
    res["mACC"] = 100 * float(acc[valid].mean()) if valid.any() else float("nan")
    res["pACC"] = 100 * float(tp.sum() / total) if total else float("nan")
    for i, name in enumerate(class_names):
        res[f"ACC-{name}"] = 100 * float(acc[i])
    return res


class SemSegEvaluator(DatasetEvaluator):
    """Scores outputs' "sem_seg" (C, H, W) logits (argmax) against each input's ground truth: the label PNG
    at "sem_seg_file_name" (8- or 16-bit, read unchanged), or an in-memory "sem_seg" (H, W) label tensor.
    Confusion matrices are summed over processes (all_gather) and scored on the main process."""

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_label: int = 255,
        class_names: Optional[List[str]] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
    ):
        """num_classes: C; ignore_label: the ground-truth value without a class; class_names: C names for the
        per-class metrics (default "0".."C-1"); output_dir: where sem_seg_evaluation.json is written."""
        self._num_classes = int(num_classes)
        self._ignore = int(ignore_label)
        self._names = list(class_names) if class_names else [str(i) for i in range(self._num_classes)]
        if len(self._names) != self._num_classes:
            raise ValueError(f"{len(self._names)} class names for {self._num_classes} classes")
        self._distributed = distributed
        self._output_dir = output_dir
        self.reset()

    def reset(self):
        self._conf = np.zeros((self._num_classes + 1, self._num_classes + 1), dtype=np.int64)

    def _ground_truth(self, inp: Dict) -> (np.ndarray, str):
        path = inp.get("sem_seg_file_name")
        if path is not None:
            gt = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if gt is None:
                raise SemSegInputError(f"{path}: semantic ground truth missing or not an image")
            if gt.ndim != 2:
                raise SemSegInputError(f"{path}: a label map has one channel, this image has {gt.shape[2]}")
            return gt, path
        if "sem_seg" in inp:
            return np.asarray(inp["sem_seg"].cpu() if hasattr(inp["sem_seg"], "cpu") else inp["sem_seg"]), str(
                inp.get("file_name", "image")
            )
        raise SemSegInputError(
            f"{inp.get('file_name', 'an input')}: no semantic ground truth ('sem_seg_file_name' or 'sem_seg')"
        )

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            pred = out["sem_seg"].argmax(dim=0).cpu().numpy()
            gt, where = self._ground_truth(inp)
            update_confusion(self._conf, pred, gt, self._ignore, where)

    def evaluate(self):
        conf = self._conf
        if self._distributed and comm.get_world_size() > 1:
            comm.synchronize()
            parts = comm.all_gather(self._conf)
            if not comm.is_main_process():
                return {}
            conf = sum(parts[1:], parts[0].copy())
        if conf.sum() == 0:
            logger.warning("SemSegEvaluator received no pixels; was the evaluation dataset empty?")
            return {}
        res = sem_seg_metrics(conf, self._names)
        if self._output_dir:
            import json

            from detgn.utils.atomic import atomic_write_text

            os.makedirs(self._output_dir, exist_ok=True)
            atomic_write_text(
                os.path.join(self._output_dir, "sem_seg_evaluation.json"),
                json.dumps({k: (None if v != v else v) for k, v in res.items()}, indent=1),
            )
        logger.info(
            "Semantic segmentation: mIoU %.2f, fwIoU %.2f, mACC %.2f, pACC %.2f",
            res["mIoU"],
            res["fwIoU"],
            res["mACC"],
            res["pACC"],
        )
        return OrderedDict({"sem_seg": res})
