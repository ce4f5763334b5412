"""Evaluating a model on the config's test sets: which evaluators a dataset gets, and the results in one shape,
{dataset: {task: {metric: value}}} (DefaultTrainer.test and test_with_TTA call these), and the pictures of
predictions written after training."""

import logging
import os
from collections import OrderedDict
from typing import List, Optional

import cv2
import torch

from detgn.data import MetadataCatalog, build_detection_test_loader
from detgn.evaluation import COCOEvaluator, inference_on_dataset
from detgn.evaluation.coco_evaluation import format_metric
from detgn.utils import comm
from detgn.utils.errors import ConfigValueError

from .precision import autocast, log_precision, resolve_inference_precision
from .setup import check_semantic_classes

__all__ = ["build_evaluator", "run_test", "run_test_with_tta", "write_prediction_pictures"]


def build_evaluator(cfg, dataset_name: str, output_folder=None):
    """The evaluator(s) of `dataset_name` for this model, by the dataset's evaluator_type (COCO by default; LVIS;
    semantic; a Panoptic FPN on a panoptic dataset gets semantic + COCO + panoptic in one pass), writing to
    `output_folder` (OUTPUT_DIR/inference/<dataset> by default)."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type == "coco_panoptic_seg" and cfg.MODEL.META_ARCHITECTURE == "PanopticFPN":
        from detgn.evaluation import DatasetEvaluators
        from detgn.evaluation.panoptic_evaluation import COCOPanopticEvaluator
        from detgn.evaluation.sem_seg_evaluation import SemSegEvaluator

        check_semantic_classes(cfg, dataset_name)
        return DatasetEvaluators(
            [
                SemSegEvaluator(
                    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                    ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                    class_names=MetadataCatalog.get(dataset_name).get("stuff_classes"),
                    output_dir=output_folder,
                ),
                COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder, backend=cfg.TEST.EVALUATOR_BACKEND),
                COCOPanopticEvaluator(dataset_name, output_dir=output_folder),
            ]
        )
    if evaluator_type == "sem_seg":
        from detgn.evaluation.sem_seg_evaluation import SemSegEvaluator

        return SemSegEvaluator(
            cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            class_names=MetadataCatalog.get(dataset_name).get("stuff_classes"),
            output_dir=output_folder,
        )
    if MetadataCatalog.get(dataset_name).get("evaluator_type") == "lvis":
        from detgn.evaluation.lvis_evaluation import LVISEvaluator

        if cfg.TEST.EVALUATOR_BACKEND != "hotcoco":
            raise ConfigValueError(
                f"TEST.EVALUATOR_BACKEND {cfg.TEST.EVALUATOR_BACKEND}: the LVIS dataset {dataset_name} is evaluated "
                "by hotcoco's LVIS mode only (it gives the lvis package's numbers); set TEST.EVALUATOR_BACKEND hotcoco"
            )

        return LVISEvaluator(
            dataset_name, tasks=tasks, output_dir=output_folder, max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE
        )
    return COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder, backend=cfg.TEST.EVALUATOR_BACKEND)


def run_test(cfg, model, evaluators=None, task_suffix: str = "", *, build=build_evaluator):
    """Evaluate on every DATASETS.TEST; returns {dataset: {task: {metric: value}}}, also for one dataset.

    evaluators: None (`build(cfg, dataset)` for each dataset, as detectron2), one DatasetEvaluator (with one test
    dataset), or a list of them, one per DATASETS.TEST entry in the same order. task_suffix: appended to each
    task's name in the results and the log ("_TTA": bbox_TTA)."""
    if evaluators is not None:
        evaluators = [evaluators] if not isinstance(evaluators, (list, tuple)) else list(evaluators)
        if len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(
                f"test got {len(evaluators)} evaluator(s) for {len(cfg.DATASETS.TEST)} test "
                f"dataset(s) {list(cfg.DATASETS.TEST)}: pass one per DATASETS.TEST entry"
            )
    results = OrderedDict()
    device_type = next(model.parameters()).device.type
    precision = resolve_inference_precision(cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.DTYPE, device_type)
    amp = precision.dtype
    log_precision(precision, "evaluation")
    for idx, name in enumerate(cfg.DATASETS.TEST):
        loader = build_detection_test_loader(cfg, name)
        evaluator = evaluators[idx] if evaluators is not None else build(cfg, name)
        results[name] = inference_on_dataset(comm.unwrap_model(model), loader, evaluator, amp_dtype=amp)
        if task_suffix:
            results[name] = OrderedDict((f"{t}{task_suffix}", m) for t, m in results[name].items())
        if comm.is_main_process():
            logging.getLogger("detgn.trainer").info("Evaluation results for %s in csv format:", name)
            for task, metrics in results[name].items():
                keys = [k for k in metrics if not k.startswith("AP-")]
                logging.getLogger("detgn.trainer").info(
                    "copypaste: Task: %s\ncopypaste: %s\ncopypaste: %s",
                    task,
                    ",".join(keys),
                    ",".join(format_metric(metrics[k], 4) for k in keys),
                )
    return results


def run_test_with_tta(cfg, model, *, build=build_evaluator):
    """Evaluate `model` with test-time augmentation (TEST.AUG.*, modeling/test_time_augmentation.py) on every
    DATASETS.TEST; results as run_test() gives them with each task renamed task_TTA (bbox_TTA, segm_TTA), files
    in OUTPUT_DIR/inference_TTA/<dataset>."""
    from detgn.modeling.test_time_augmentation import GeneralizedRCNNWithTTA

    logging.getLogger("detgn.trainer").info(
        "Evaluation with test-time augmentation: short sides %s (long side <= %d)%s",
        list(cfg.TEST.AUG.MIN_SIZES),
        cfg.TEST.AUG.MAX_SIZE,
        ", each also flipped" if cfg.TEST.AUG.FLIP else "",
    )
    tta = GeneralizedRCNNWithTTA(cfg, comm.unwrap_model(model))
    evaluators = [
        build(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
        for name in cfg.DATASETS.TEST
    ]
    return run_test(cfg, tta, evaluators, task_suffix="_TTA")


def write_prediction_pictures(
    cfg, model, dataset_name: str, num: int, out_dir: str, threshold: Optional[float] = None
) -> List[str]:
    """Write input | GT | prediction PNGs of the first `num` images of `dataset_name` to out_dir; returns the paths.
    threshold: the lowest score drawn (default cfg.TEST.VIS_SCORE_THRESH)."""
    from detgn.data import DatasetCatalog, DatasetMapper
    from detgn.data.detection_utils import read_image, record_ground_truth
    from detgn.utils.prediction_pictures import prediction_panels

    threshold = cfg.TEST.VIS_SCORE_THRESH if threshold is None else threshold
    os.makedirs(out_dir, exist_ok=True)
    dicts = DatasetCatalog.get(dataset_name)[:num]
    names = MetadataCatalog.get(dataset_name).get("thing_classes")
    mapper = DatasetMapper(cfg, False)
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
            truth = record_ground_truth(d, img.shape[:2])
            cv2.imwrite(path, prediction_panels(img, out, truth, names, threshold))
            paths.append(path)
    model.train(was_training)
    return paths
