#!/usr/bin/env python
"""Train detgn's ResNet/ResNeXt backbone as an image classifier (GN ImageNet pretraining), with the
detection trainer's launch, precision policy, exact resume, metrics and plots.

    python tools/train_classifier.py --config-file configs/ImageNet/R_50_GN_100ep.yaml \\
        CLASSIFIER.TRAIN_DIR /data/imagenet/train CLASSIFIER.VAL_DIR /data/imagenet/val --num-gpus 8
    python tools/make_crop_dataset.py && python tools/train_classifier.py --config-file configs/ImageNet/R_18_GN_nuclei_crops.yaml
    python tools/train_classifier.py --config-file CFG --resume            # continue after an interruption
    python tools/train_classifier.py --config-file CFG --eval-only MODEL.WEIGHTS out/model_final.pth

The data are ImageFolder roots (one sub-folder of images per class). OUTPUT_DIR/model_final.pth holds
the classifier; MODEL.WEIGHTS of a detector config with the same MODEL.RESNETS.* loads its backbone
(every backbone tensor matched, fc unused), and tools/convert_weights.py --to torchvision writes it
in torchvision's names. Multi-process: --num-gpus / --num-machines / torchrun as tools/train_net.py.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detgn.engine import default_setup, describe_model, save_config  # noqa: E402
from detgn.engine.classifier_trainer import ClassifierTrainer, prepare_classifier_cfg  # noqa: E402
from detgn.jobs import ConfigError, launch, run_training_cli, setup_cfg  # noqa: E402
from detgn.utils import comm  # noqa: E402


def default_cfg():
    """The keys this tool reads: the detector's defaults plus CLASSIFIER.* (tools/submit.py asks for them too)."""
    from detgn.config import get_classifier_cfg

    return get_classifier_cfg()


def resolved_cfg(args):
    """The config with its data-dependent values resolved (classes, epochs -> iterations, LR scaling), and notes."""
    from detgn.data.classification import load_image_folder

    cfg = setup_cfg(args, default_cfg)
    train = load_image_folder(cfg.CLASSIFIER.TRAIN_DIR, "CLASSIFIER.TRAIN_DIR")
    val = load_image_folder(cfg.CLASSIFIER.VAL_DIR, "CLASSIFIER.VAL_DIR") if cfg.CLASSIFIER.VAL_DIR else None
    return prepare_classifier_cfg(cfg, train, val)


def main(args):
    cfg, notes = resolved_cfg(args)
    cfg.freeze()
    default_setup(cfg, args)
    log = logging.getLogger("detgn.trainer")
    for line in notes:
        log.info(line)
    if args.eval_only:
        from detgn.checkpoint import DetectionCheckpointer
        from detgn.modeling import build_model

        if not cfg.MODEL.WEIGHTS or not cfg.CLASSIFIER.VAL_DIR:
            raise ConfigError("--eval-only needs MODEL.WEIGHTS (a classifier checkpoint) and CLASSIFIER.VAL_DIR")
        save_config(cfg, "config_eval.yaml")
        model = build_model(cfg)
        describe_model(cfg, model, verbose=args.verbose)
        DetectionCheckpointer(model, cfg.OUTPUT_DIR).load(cfg.MODEL.WEIGHTS)
        return ClassifierTrainer.test(cfg, model)
    trainer = ClassifierTrainer(cfg, verbose=args.verbose)
    trainer.resume_or_load(resume=args.resume)
    save_config(cfg)
    results = trainer.train()
    if comm.is_main_process():
        try:
            from detgn.utils.plot_metrics import plot_metrics

            log.info("Plots written: %s", ", ".join(plot_metrics(cfg.OUTPUT_DIR)))
        except ImportError as e:
            log.info("Skipping plots (%s)", e)
        log.info(
            "Classifier weights: %s (MODEL.WEIGHTS of a detector with the same MODEL.RESNETS settings)",
            os.path.join(cfg.OUTPUT_DIR, "model_final.pth"),
        )
    return results


def check_classifier_cfg(cfg):
    if cfg.MODEL.META_ARCHITECTURE != "ImageNetClassifier":
        raise ConfigError(
            f"tools/train_classifier.py trains MODEL.META_ARCHITECTURE ImageNetClassifier, not "
            f"{cfg.MODEL.META_ARCHITECTURE}; start from configs/ImageNet/*.yaml"
        )
    if cfg.SOLVER.IMS_PER_DEVICE or cfg.SOLVER.REFERENCE_WORLD_SIZE:
        raise ConfigError(
            "SOLVER.IMS_PER_DEVICE / SOLVER.REFERENCE_WORLD_SIZE (gradient accumulation, batch rescaling) are for "
            "tools/train_net.py; the classifier's batch is SOLVER.IMS_PER_BATCH over the processes, its LR follows "
            "CLASSIFIER.LR_REFERENCE_BATCH"
        )


def parse_args(argv=None):
    """The arguments as cli() parses them (tests/test_documented_commands.py reads documented command lines with it)."""
    from detgn.jobs.args import default_argument_parser, parse_with_overrides

    return parse_with_overrides(default_argument_parser(tool="tools/train_classifier.py"), argv)


def cli(argv=None):
    return run_training_cli(
        main,
        argv,
        tool="tools/train_classifier.py",
        check_cfg=check_classifier_cfg,
        launch_fn=launch,
        default_cfg=default_cfg,
        description="Train detgn's ResNet backbone as an image classifier (GN ImageNet pretraining).",
    )


if __name__ == "__main__":
    sys.exit(cli())
