"""Same detections? Compare an exported model's output with eager detgn's on the same image.

A reference detection is matched to the unused exported detection of the same class with the
highest box IoU, if that IoU is > 0.99 (greedy, in reference order). The export passes when at
least 98% of the detections on each side are matched, matched scores differ by at most 1e-3 and
every matched pair of masks has IoU >= 0.99, with one allowance (as in the detectron2 parity
test): a pair below 0.99 whose differing pixels all have an exported probability within 0.01 of
the 0.5 threshold is float rounding of a pixel sitting on the threshold (it happens to masks of
a few pixels, where one pixel moves IoU by 0.3), and is counted apart as "borderline".
"""

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

__all__ = [
    "ComparisonReport",
    "box_iou",
    "match_detections",
    "compare_detections",
    "instances_to_numpy",
    "compare_with_eager",
]

BOX_IOU, MATCHED_FRACTION, SCORE_DIFF, MASK_IOU, BORDERLINE = 0.99, 0.98, 1e-3, 0.99, 0.01


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) XYXY -> (N, M) IoU, 0 where a box has no area."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(inter > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_detections(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> List[Tuple[int, int]]:
    """Pairs (i, j) of reference detection i and detection j: for each reference detection in order, the unused
    detection of the same class with the highest box IoU, when that IoU is > BOX_IOU (0.99). Inputs are
    {"boxes": (N, 4) XYXY pixels, "classes": (N,) ints}. (Also the detectron2 parity test's matching.)"""
    iou = box_iou(ref["boxes"].astype(np.float64), got["boxes"].astype(np.float64))
    iou[ref["classes"][:, None] != got["classes"][None, :]] = -1
    pairs, used = [], np.zeros(len(got["boxes"]), dtype=bool)
    for i in range(len(ref["boxes"])):
        row = np.where(used, -1, iou[i])
        if row.size and row.max() > BOX_IOU:
            j = int(row.argmax())
            used[j] = True
            pairs.append((i, j))
    return pairs


@dataclass
class ComparisonReport:
    num_reference: int
    num_exported: int
    matched: int
    max_score_diff: float
    min_mask_iou: float
    masks_below: int  # matched masks with IoU < 0.99 that are not borderline (failures)
    masks_borderline: int = 0  # IoU < 0.99 only through pixels on the threshold

    @property
    def ok(self) -> bool:
        enough = self.matched >= MATCHED_FRACTION * max(self.num_reference, self.num_exported)
        return enough and self.max_score_diff <= SCORE_DIFF and self.masks_below == 0

    def summary(self) -> str:
        return (
            f"{'same detections' if self.ok else 'DIFFERENT detections'}: {self.matched} of {self.num_reference} eager / "
            f"{self.num_exported} exported matched (same class, box IoU > {BOX_IOU}), max score difference "
            f"{self.max_score_diff:.1e}, lowest mask IoU {self.min_mask_iou:.4f} ({self.masks_below} below {MASK_IOU}"
            f"{f', {self.masks_borderline} more only at pixels on the threshold' if self.masks_borderline else ''})"
        )


def compare_detections(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> ComparisonReport:
    pairs = match_detections(ref, got)
    score_diff, ious, below, borderline = 0.0, [], 0, 0
    for i, j in pairs:
        score_diff = max(score_diff, float(abs(ref["scores"][i] - got["scores"][j])))
        if "masks" in ref and "masks" in got:
            a, b = ref["masks"][i], got["masks"][j]
            union = np.logical_or(a, b).sum()
            ious.append(float(np.logical_and(a, b).sum() / union) if union else 1.0)
            if ious[-1] < MASK_IOU:
                if "mask_probs" in got and _on_threshold(got, j, a != b):
                    borderline += 1
                else:
                    below += 1
    return ComparisonReport(
        len(ref["boxes"]), len(got["boxes"]), len(pairs), score_diff, min(ious) if ious else 1.0, below, borderline
    )


def _on_threshold(got: Dict[str, np.ndarray], j: int, differing: np.ndarray) -> bool:
    from .postprocess import paste_masks

    probs = paste_masks(got["mask_probs"][j : j + 1], got["boxes"][j : j + 1], *differing.shape, threshold=None)[0]
    return bool(np.all(np.abs(probs[differing] - 0.5) <= BORDERLINE))


def instances_to_numpy(instances) -> Dict[str, np.ndarray]:
    """detgn Instances (pred_boxes, scores, pred_classes[, pred_masks]) -> the predictors' dict of arrays."""
    out = {
        "boxes": instances.pred_boxes.tensor.numpy(),
        "scores": instances.scores.numpy(),
        "classes": instances.pred_classes.numpy(),
    }
    if instances.has("pred_masks"):
        out["masks"] = instances.pred_masks.numpy().astype(bool)
    return out


def exported_predictor(model_path: str, **kwargs):
    """OnnxPredictor for *.onnx, TorchScriptPredictor otherwise."""
    from .predictors import OnnxPredictor, TorchScriptPredictor

    return (
        OnnxPredictor(model_path, **kwargs)
        if model_path.endswith(".onnx")
        else TorchScriptPredictor(model_path, **kwargs)
    )


def compare_with_eager(predictor, model_path: str, image_bgr: np.ndarray) -> ComparisonReport:
    """Run detgn's DefaultPredictor and the exported model on one BGR image and compare."""
    ref = instances_to_numpy(predictor(image_bgr)["instances"].to("cpu"))
    got = exported_predictor(model_path)(image_bgr)
    return compare_detections(ref, got)
