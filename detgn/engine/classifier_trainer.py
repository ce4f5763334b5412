"""Training detgn's ResNet backbone as an image classifier (tools/train_classifier.py): the detection
trainer's loop, hooks, checkpoints (exact resume), precision policy and writers, with ImageFolder data,
an epoch-based schedule and top-1/top-5 evaluation."""

import logging
import math

from detgn.config import get_classifier_cfg
from detgn.data.classification import (
    build_classification_test_loader,
    build_classification_train_loader,
    load_image_folder,
)
from detgn.evaluation import inference_on_dataset
from detgn.evaluation.classification_evaluation import ClassificationEvaluator
from detgn.utils import comm

from detgn.config import ConfigError

from .trainer import DefaultTrainer
from .precision import log_precision, resolve_inference_precision

__all__ = ["ClassifierTrainer", "prepare_classifier_cfg"]

logger = logging.getLogger("detgn.trainer")


def prepare_classifier_cfg(cfg, train_folder, val_folder=None):
    """Resolve the classifier's config against its data -> (mutable clone, lines to log):
    CLASSIFIER.NUM_CLASSES from the class folders (0) or checked against them; CLASSIFIER.EPOCHS ->
    SOLVER.MAX_ITER and SOLVER.STEPS; SOLVER.BASE_LR scaled by IMS_PER_BATCH / LR_REFERENCE_BATCH.
    The result is self-consistent (EPOCHS and LR_REFERENCE_BATCH become 0 once applied), so the
    OUTPUT_DIR/config.yaml written from it reproduces the run as it is."""
    cfg = cfg.clone()
    cfg.defrost()
    c, s, default = cfg.CLASSIFIER, cfg.SOLVER, get_classifier_cfg()
    if cfg.MODEL.META_ARCHITECTURE != "ImageNetClassifier":
        raise ConfigError(
            f"tools/train_classifier.py trains MODEL.META_ARCHITECTURE ImageNetClassifier, not "
            f"{cfg.MODEL.META_ARCHITECTURE}; start from configs/ImageNet/*.yaml"
        )
    classes = train_folder["classes"]
    if c.NUM_CLASSES == 0:
        c.NUM_CLASSES = len(classes)
    elif c.NUM_CLASSES != len(classes):
        raise ConfigError(
            f"CLASSIFIER.NUM_CLASSES is {c.NUM_CLASSES} but {c.TRAIN_DIR} has {len(classes)} class folders; "
            "set it to 0 to take the folders' number"
        )
    if val_folder is not None and val_folder["classes"] != classes:
        raise ConfigError(
            f"CLASSIFIER.VAL_DIR {c.VAL_DIR} has other class folders than CLASSIFIER.TRAIN_DIR "
            f"({len(val_folder['classes'])} vs {len(classes)}); they must have the same names"
        )
    n, notes = len(train_folder["records"]), []
    if c.EPOCHS > 0:
        if s.MAX_ITER != default.SOLVER.MAX_ITER or tuple(s.STEPS) != tuple(default.SOLVER.STEPS):
            raise ConfigError(
                "CLASSIFIER.EPOCHS > 0 sets SOLVER.MAX_ITER and SOLVER.STEPS from the dataset size; leave them "
                "unset, or set CLASSIFIER.EPOCHS 0 to give iterations"
            )
        per_epoch = math.ceil(n / s.IMS_PER_BATCH)
        s.MAX_ITER = c.EPOCHS * per_epoch
        s.STEPS = tuple(e * per_epoch for e in c.LR_STEP_EPOCHS if 0 < e < c.EPOCHS)
        notes.append(
            f"Schedule: {c.EPOCHS} epochs of {n} images at {s.IMS_PER_BATCH} per iteration = {s.MAX_ITER} iterations; "
            f"LR x {s.GAMMA:g} at epochs {tuple(c.LR_STEP_EPOCHS)} (iterations {tuple(s.STEPS)})"
        )
        c.EPOCHS, c.LR_STEP_EPOCHS = 0, default.CLASSIFIER.LR_STEP_EPOCHS
    elif tuple(c.LR_STEP_EPOCHS) != tuple(default.CLASSIFIER.LR_STEP_EPOCHS):
        raise ConfigError(
            "CLASSIFIER.LR_STEP_EPOCHS needs CLASSIFIER.EPOCHS > 0 (with EPOCHS 0, SOLVER.STEPS gives the LR steps)"
        )
    if c.LR_REFERENCE_BATCH > 0:
        lr = s.BASE_LR * s.IMS_PER_BATCH / c.LR_REFERENCE_BATCH
        notes.append(
            f"Learning rate: SOLVER.BASE_LR {s.BASE_LR:g} per {c.LR_REFERENCE_BATCH} images x {s.IMS_PER_BATCH} images "
            f"per iteration = {lr:g} (linear scaling rule)"
        )
        s.BASE_LR, c.LR_REFERENCE_BATCH = lr, 0
    return cfg, notes


class ClassifierTrainer(DefaultTrainer):
    """DefaultTrainer with ImageFolder data (CLASSIFIER.TRAIN_DIR / VAL_DIR) and top-1/top-5 evaluation."""

    def load_train_data(self):
        c = self.cfg.CLASSIFIER
        folder = load_image_folder(c.TRAIN_DIR, "CLASSIFIER.TRAIN_DIR")
        val = (
            f"; val {c.VAL_DIR}: {len(load_image_folder(c.VAL_DIR, 'CLASSIFIER.VAL_DIR')['records'])} images"
            if c.VAL_DIR
            else ""
        )
        logger.info(
            "Data: train %s: %d images in %d classes%s",
            c.TRAIN_DIR,
            len(folder["records"]),
            len(folder["classes"]),
            val,
        )
        return folder["records"]

    def has_evaluation(self) -> bool:
        return bool(self.cfg.CLASSIFIER.VAL_DIR)

    def build_train_loader(self):
        return build_classification_train_loader(
            self.cfg, self.train_dicts, start_iter=self.start_iter, seed=self.data_seed
        )

    @classmethod
    def test(cls, cfg, model, evaluator=None):
        """Top-1 (and top-5) accuracy in percent on CLASSIFIER.VAL_DIR: {"classification": {...}} on the main process.
        evaluator: a DatasetEvaluator over the classifier's outputs (default: ClassificationEvaluator)."""
        device_type = next(model.parameters()).device.type
        precision = resolve_inference_precision(cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.DTYPE, device_type)
        log_precision(precision, "evaluation")
        records = load_image_folder(cfg.CLASSIFIER.VAL_DIR, "CLASSIFIER.VAL_DIR")["records"]
        loader = build_classification_test_loader(cfg, records)
        net = comm.unwrap_model(model)
        evaluator = evaluator if evaluator is not None else ClassificationEvaluator(cfg.CLASSIFIER.NUM_CLASSES)
        results = inference_on_dataset(net, loader, evaluator, amp_dtype=precision.dtype)
        if comm.is_main_process() and results:
            r = results["classification"]
            logger.info(
                "Evaluation on %s: top-1 %.2f%%%s on %d images",
                cfg.CLASSIFIER.VAL_DIR,
                r["top1"],
                f", top-5 {r['top5']:.2f}%" if "top5" in r else "",
                r["images"],
            )
        return results
