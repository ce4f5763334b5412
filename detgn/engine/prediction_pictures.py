"""Pictures of a model's predictions: one image (tools/demo.py) or the first images of a dataset
(tools/train_net.py after training, TEST.VIS_PERIOD_IMAGES pictures at TEST.VIS_SCORE_THRESH):
input | ground truth | prediction, with a title over each panel and the score colour legend below."""

import os
from typing import List, Optional

import cv2
import numpy as np
import torch

from detgn.utils.visualizer import draw_instances, score_legend, title_bar

__all__ = ["draw_prediction", "draw_ground_truth", "prediction_panels", "write_prediction_pictures"]


def draw_prediction(
    image_bgr: np.ndarray, instances, class_names=None, threshold: float = 0.5, legend: bool = True
) -> np.ndarray:
    """(H, W, 3) BGR image with the masks, boxes and labels of instances scoring >= threshold; with
    legend, a strip below it (H + 22 rows) explains the box colours and counts the labels."""
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
    if not legend:
        return r.image
    return np.concatenate([r.image, score_legend(r.image.shape[1], threshold, _label_note(r))], axis=0)


def _label_note(r) -> str:
    if r.num_labelled == r.num_instances:
        return f"{r.num_instances} shown, all labelled"
    return f"{r.num_instances} shown, {r.num_labelled} labelled (the rest would overlap)"


def draw_ground_truth(image_bgr: np.ndarray, record: dict, class_names=None) -> Optional[np.ndarray]:
    """The annotations of a dataset record drawn on its image (masks, boxes, class names where there are
    several classes); None when the record has no annotations."""
    from fvcore.transforms import NoOpTransform

    from detgn.data.detection_utils import annotations_to_instances, transform_instance_annotations
    from detgn.structures import BitMasks, PolygonMasks

    if "annotations" not in record:
        return None
    h, w = image_bgr.shape[:2]
    annos = [
        transform_instance_annotations(a, NoOpTransform(), (h, w))  # any box mode -> XYXY pixels
        for a in record["annotations"]
        if not a.get("iscrowd", 0)
    ]
    inst = annotations_to_instances(annos, (h, w), mask_format="bitmask")
    masks = None
    if inst.has("gt_masks"):
        gm = inst.gt_masks
        masks = (BitMasks.from_polygon_masks(gm, h, w) if isinstance(gm, PolygonMasks) else gm).tensor.numpy()
    multi = class_names is not None and len(class_names) > 1
    return draw_instances(
        image_bgr,
        inst.gt_boxes.tensor.numpy(),
        masks,
        inst.gt_classes.tolist() if multi else None,
        None,
        class_names,
        draw_labels=multi,
    )


def prediction_panels(
    image_bgr: np.ndarray, instances, record: Optional[dict], class_names=None, threshold: float = 0.5
) -> np.ndarray:
    """input | ground truth (when the record has annotations) | prediction, titled, with the score legend below."""
    h, w = image_bgr.shape[:2]
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
    panels = [(image_bgr, "input")]
    gt = draw_ground_truth(image_bgr, record, class_names) if record is not None else None
    if gt is not None:
        n_gt = sum(1 for a in record["annotations"] if not a.get("iscrowd", 0))
        panels.append((gt, f"ground truth: {n_gt}"))
    panels.append((r.image, f"prediction: {len(inst)} with score >= {threshold:.2f}"))
    row = np.concatenate([np.concatenate([title_bar(w, t), p], axis=0) for p, t in panels], axis=1)
    return np.concatenate([row, score_legend(row.shape[1], threshold, _label_note(r))], axis=0)


def write_prediction_pictures(
    cfg, model, dataset_name: str, num: int, out_dir: str, threshold: Optional[float] = None
) -> List[str]:
    """Write input | GT | prediction PNGs of the first `num` images of `dataset_name` to out_dir; returns the paths.
    threshold: the lowest score drawn (default cfg.TEST.VIS_SCORE_THRESH)."""
    from detgn.data import DatasetCatalog, DatasetMapper, MetadataCatalog
    from detgn.data.detection_utils import read_image

    threshold = cfg.TEST.VIS_SCORE_THRESH if threshold is None else threshold
    os.makedirs(out_dir, exist_ok=True)
    dicts = DatasetCatalog.get(dataset_name)[:num]
    names = MetadataCatalog.get(dataset_name).get("thing_classes")
    mapper = DatasetMapper(cfg, False)
    from detgn.engine.precision import autocast, resolve_inference_precision

    precision = resolve_inference_precision(
        cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.DTYPE, next(model.parameters()).device.type
    )
    was_training = model.training
    model.eval()
    paths = []
    with torch.no_grad():
        for d in dicts:
            with autocast(precision):  # as the evaluation before it
                out = model([mapper(d)])[0]["instances"]
            img = read_image(d["file_name"], "BGR")
            path = os.path.join(out_dir, os.path.splitext(os.path.basename(d["file_name"]))[0] + "_pred.png")
            cv2.imwrite(path, prediction_panels(img, out, d, names, threshold))
            paths.append(path)
    model.train(was_training)
    return paths
