"""Pictures of a model's predictions: one image (tools/demo.py) or the first images of a dataset
(tools/train_net.py after training, TEST.VIS_PERIOD_IMAGES)."""
import os
from typing import List

import cv2
import numpy as np
import torch


__all__ = ["draw_prediction", "write_prediction_pictures"]


def draw_prediction(image_bgr: np.ndarray, instances, class_names=None, threshold: float = 0.5) -> np.ndarray:
    """(H, W, 3) BGR image with the masks, boxes, classes and scores of instances scoring >= threshold."""
    from detgn.utils.visualizer import draw_instances

    inst = instances[instances.scores >= threshold].to("cpu")
    masks = inst.pred_masks.numpy() if inst.has("pred_masks") else None
    return draw_instances(image_bgr, inst.pred_boxes.tensor.numpy(), masks, inst.pred_classes.tolist(), inst.scores.tolist(),
                          class_names, draw_labels=len(inst) <= 40)


def write_prediction_pictures(cfg, model, dataset_name: str, num: int, out_dir: str, threshold: float = 0.5) -> List[str]:
    """Write input | prediction PNGs of the first `num` images of `dataset_name` to out_dir; returns the paths."""
    from detgn.data import DatasetCatalog, DatasetMapper, MetadataCatalog
    from detgn.data.detection_utils import read_image

    os.makedirs(out_dir, exist_ok=True)
    dicts = DatasetCatalog.get(dataset_name)[:num]
    names = MetadataCatalog.get(dataset_name).get("thing_classes")
    mapper = DatasetMapper(cfg, False)
    was_training = model.training
    model.eval()
    paths = []
    with torch.no_grad():
        for d in dicts:
            inp = mapper(d)
            out = model([inp])[0]["instances"]
            img = read_image(d["file_name"], "BGR")
            vis = draw_prediction(img, out, names, threshold)
            path = os.path.join(out_dir, os.path.splitext(os.path.basename(d["file_name"]))[0] + "_pred.png")
            cv2.imwrite(path, np.concatenate([img, vis], axis=1))
            paths.append(path)
    model.train(was_training)
    return paths
