#!/usr/bin/env python
"""Train a detgn model (GN Mask R-CNN by default) and evaluate it with the COCO metrics.

Run with --help for every option. Examples are listed at the end of --help.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detgn.engine import DefaultTrainer, default_setup, describe_model, log_data_summary, save_config  # noqa: E402
from detgn.jobs import ConfigError, launch, run_training_cli, setup_cfg  # noqa: E402
from detgn.utils import comm  # noqa: E402


def main(args):
    cfg = setup_cfg(args)
    cfg.freeze()
    default_setup(cfg, args)
    if args.eval_only:
        from detgn.checkpoint import DetectionCheckpointer
        from detgn.modeling import build_model

        if not cfg.MODEL.WEIGHTS:
            raise ConfigError("--eval-only needs MODEL.WEIGHTS (a checkpoint to evaluate)")
        if not cfg.DATASETS.TEST:
            raise ConfigError("--eval-only needs DATASETS.TEST")
        save_config(cfg, "config_eval.yaml")
        log_data_summary(cfg)
        model = build_model(cfg)
        describe_model(cfg, model, verbose=args.verbose)
        ck = DetectionCheckpointer(model, cfg.OUTPUT_DIR)
        path = ck.get_checkpoint_file() if args.resume and ck.has_checkpoint() else cfg.MODEL.WEIGHTS
        # the weights MODEL_EMA.EVAL names: raw, the file's EMA average, or both (the average's tasks as <task>_EMA)
        mode = cfg.MODEL_EMA.EVAL if cfg.MODEL_EMA.ENABLED else "raw"
        results = {}
        for ema, suffix in [(False, ""), (True, "_EMA" if mode == "both" else "")]:
            if (mode == "raw" and ema) or (mode == "ema" and not ema):
                continue
            ck.load_for_inference(path, allow_partial=args.allow_partial_weights, ema=ema)
            for name, tasks in DefaultTrainer.test(cfg, model, task_suffix=suffix).items():
                results.setdefault(name, {}).update(tasks)
        if cfg.TEST.AUG.ENABLED:  # both, as detectron2: the plain results and the augmented ones (task_TTA)
            tta = DefaultTrainer.test_with_TTA(cfg, model)
            for name in results:
                results[name].update(tta[name])
        return results
    trainer = DefaultTrainer(cfg, verbose=args.verbose)
    trainer.resume_or_load(resume=args.resume)
    save_config(cfg)  # after the resumed state loaded: a failed resume leaves the run's config.yaml as it was
    results = trainer.train()
    if comm.is_main_process():
        after_training(cfg, trainer)
    return results


def after_training(cfg, trainer):
    """Plots of metrics.json and prediction pictures (when configured), on the main process."""
    log = logging.getLogger("detgn")
    try:
        from detgn.utils.plot_metrics import plot_metrics

        written = plot_metrics(cfg.OUTPUT_DIR)
        if written:
            log.info("Plots written: %s", ", ".join(written))
    except ImportError as e:
        log.info("Skipping plots (%s)", e)
    n = cfg.TEST.VIS_PERIOD_IMAGES
    if n > 0 and cfg.DATASETS.TEST:
        from detgn.engine.evaluate import write_prediction_pictures

        paths = write_prediction_pictures(
            cfg, trainer.model, cfg.DATASETS.TEST[0], n, os.path.join(cfg.OUTPUT_DIR, "predictions")
        )
        log.info("Prediction pictures: %s", ", ".join(paths))


def check_detection_cfg(cfg):
    """train_net trains detectors: a classifier config belongs to tools/train_classifier.py (its CLASSIFIER.* keys
    are unknown here and refused by name when the config is read)."""
    if cfg.MODEL.META_ARCHITECTURE == "ImageNetClassifier":
        raise ConfigError("MODEL.META_ARCHITECTURE ImageNetClassifier is trained with tools/train_classifier.py")


def parse_args(argv=None):
    """The arguments as cli() parses them (tests/test_documented_commands.py reads documented command lines with it)."""
    from detgn.jobs.args import default_argument_parser, parse_with_overrides

    return parse_with_overrides(default_argument_parser(), argv)


def cli(argv=None):
    return run_training_cli(main, argv, tool="tools/train_net.py", check_cfg=check_detection_cfg, launch_fn=launch)


if __name__ == "__main__":
    sys.exit(cli())
