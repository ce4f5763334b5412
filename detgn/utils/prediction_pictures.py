"""Pictures of a model's predictions: one image (tools/demo.py) or input | ground truth | prediction panels,
with a title over each panel and the score colour legend below (engine/evaluate.py writes them for the first
images of a test set after training)."""

import numpy as np

from detgn.utils.visualizer import draw_instances, score_legend, title_bar

__all__ = ["draw_prediction", "draw_ground_truth", "prediction_panels"]


def draw_prediction(
    image_bgr: np.ndarray, instances, class_names=None, threshold: float = 0.5, legend: bool = True
) -> np.ndarray:
    """(H, W, 3) BGR image with the masks, boxes and labels of instances scoring >= threshold; with
    legend, a strip below it (H + 22 rows) explains the box colours and counts the labels."""
    inst, r = _draw_scoring(image_bgr, instances, class_names, threshold)
    if not legend:
        return r.image
    return np.concatenate([r.image, score_legend(r.image.shape[1], threshold, _label_note(r))], axis=0)


def _draw_scoring(image_bgr: np.ndarray, instances, class_names, threshold: float):
    """The instances scoring >= threshold (on the CPU) and their drawing (visualizer.draw_instances' result)."""
    inst = instances[instances.scores >= threshold].to("cpu")
    masks = inst.pred_masks.numpy() if inst.has("pred_masks") else None
    r = draw_instances(
        image_bgr,
        inst.pred_boxes.tensor.numpy(),
        masks,
        inst.pred_classes.tolist(),
        inst.scores.tolist(),
        class_names,
        score_low=threshold,
        return_result=True,
    )
    return inst, r


def _label_note(r) -> str:
    if r.num_labelled == r.num_instances:
        return f"{r.num_instances} shown, all labelled"
    return f"{r.num_instances} shown, {r.num_labelled} labelled (the rest would overlap)"


def draw_ground_truth(image_bgr: np.ndarray, ground_truth, class_names=None) -> np.ndarray:
    """Ground truth drawn on its image: `ground_truth` an Instances with gt_boxes (XYXY pixels), gt_classes and
    optionally gt_masks (BitMasks or PolygonMasks), as data.detection_utils.record_ground_truth gives it; class
    names where there are several classes."""
    from detgn.structures import BitMasks, PolygonMasks

    h, w = image_bgr.shape[:2]
    masks = None
    if ground_truth.has("gt_masks"):
        gm = ground_truth.gt_masks
        masks = (BitMasks.from_polygon_masks(gm, h, w) if isinstance(gm, PolygonMasks) else gm).tensor.numpy()
    multi = class_names is not None and len(class_names) > 1
    return draw_instances(
        image_bgr,
        ground_truth.gt_boxes.tensor.numpy(),
        masks,
        ground_truth.gt_classes.tolist() if multi else None,
        None,
        class_names,
        draw_labels=multi,
    )


def prediction_panels(
    image_bgr: np.ndarray, instances, ground_truth=None, class_names=None, threshold: float = 0.5
) -> np.ndarray:
    """input | ground truth (an Instances, see draw_ground_truth; None: no panel) | prediction, titled, with the
    score legend below."""
    h, w = image_bgr.shape[:2]
    inst, r = _draw_scoring(image_bgr, instances, class_names, threshold)
    panels = [(image_bgr, "input")]
    if ground_truth is not None:
        panels.append((draw_ground_truth(image_bgr, ground_truth, class_names), f"ground truth: {len(ground_truth)}"))
    panels.append((r.image, f"prediction: {len(inst)} with score >= {threshold:.2f}"))
    row = np.concatenate([np.concatenate([title_bar(w, t), p], axis=0) for p, t in panels], axis=1)
    return np.concatenate([row, score_legend(row.shape[1], threshold, _label_note(r))], axis=0)
