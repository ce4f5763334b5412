#!/usr/bin/env python
"""Train a detgn model (GN Mask R-CNN by default) and evaluate it with the COCO metrics.

Run with --help for every option. Examples are listed at the end of --help.
"""
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detgn.engine import (ConfigError, DefaultTrainer, default_argument_parser, default_setup, describe_model,  # noqa: E402
                          launch, log_data_summary, setup_cfg)
from detgn.utils import comm  # noqa: E402
from detgn.utils.errors import UserInputError  # noqa: E402


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
        log_data_summary(cfg)
        model = build_model(cfg)
        describe_model(cfg, model, verbose=args.verbose)
        DetectionCheckpointer(model, cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return DefaultTrainer.test(cfg, model)
    trainer = DefaultTrainer(cfg, verbose=args.verbose)
    trainer.resume_or_load(resume=args.resume)
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
        from detgn.utils.prediction_pictures import write_prediction_pictures

        paths = write_prediction_pictures(cfg, trainer.model, cfg.DATASETS.TEST[0], n, os.path.join(cfg.OUTPUT_DIR, "predictions"))
        log.info("Prediction pictures: %s", ", ".join(paths))


def _last_checkpoint_hint(cfg, args) -> str:
    """'Last checkpoint: DIR/model_X.pth; continue with: ... --resume' (or that there is none)."""
    tag = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    try:
        with open(tag) as f:
            last = os.path.join(cfg.OUTPUT_DIR, f.read().strip())
    except OSError:
        return f"No checkpoint was saved in {cfg.OUTPUT_DIR}."
    cmd = " ".join([os.path.basename(sys.executable), "tools/train_net.py"] + (["--config-file", args.config_file] if args.config_file else [])
                   + ["--resume"] + list(args.opts))
    return f"Last checkpoint: {last}; continue with: {cmd}"


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    try:
        cfg = setup_cfg(args)  # validate config and overrides before spawning anything
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    use_cuda = cfg.MODEL.DEVICE.startswith("cuda")
    import torch

    use_cuda = use_cuda and torch.cuda.is_available()
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank, dist_url=args.dist_url,
               args=(args,), use_cuda=use_cuda)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"error: {e} {_last_checkpoint_hint(cfg, args)}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"interrupted. {_last_checkpoint_hint(cfg, args)}", file=sys.stderr)
        return 130
    except UserInputError as e:  # a config value, dataset, image or weights file the user can fix; other errors keep their traceback
        if os.environ.get("DETGN_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
