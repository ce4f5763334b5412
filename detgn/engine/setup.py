"""Setting up a run and reporting on it: output dir, logging, seeds, the saved config, and the one-line
summaries of the data and the model that every training run logs."""

import logging
import os
import random
import sys
import time
from typing import Optional

import numpy as np
import torch

from detgn.config import ConfigError
from detgn.data import MetadataCatalog, get_detection_dataset_dicts
from detgn.utils import comm
from detgn.utils.atomic import atomic_write_text
from detgn.utils.errors import ConfigValueError, UserInputError
from detgn.utils.logger import setup_logger

from .precision import cpu_description, cpu_model

__all__ = [
    "default_setup",
    "seed_all_rng",
    "save_config",
    "check_thing_classes",
    "check_semantic_classes",
    "log_data_summary",
    "describe_model",
]


def seed_all_rng(seed: Optional[int] = None) -> int:
    if seed is None or seed < 0:
        seed = (os.getpid() + int(time.time() * 1e6) + int.from_bytes(os.urandom(2), "big")) % (2**31)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def _check_writable(output_dir: str) -> None:
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".write_test.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(
            f"OUTPUT_DIR {output_dir} is not writable ({e.strerror}); choose another with OUTPUT_DIR <dir>"
        ) from e


def default_setup(cfg, args) -> None:
    """Output dir check, logging (log.txt on rank 0 only), config.yaml, a short header (config, output
    dir, device), seeding, cudnn settings. The full config is printed only with args.verbose."""
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if rank == 0:
        _check_writable(output_dir)
    comm.synchronize()
    logger = setup_logger(output_dir if rank == 0 else None, distributed_rank=rank, name="detgn")
    for name in ("fvcore", "__main__"):
        setup_logger(output_dir if rank == 0 else None, distributed_rank=rank, name=name)
    logger.info("Rank %d of %d; command line: %s", rank, comm.get_world_size(), " ".join(sys.argv))
    if getattr(args, "verbose", False):
        logger.info("Running with config:\n%s", cfg.dump())
    config_name = getattr(args, "config_file", "") or "(defaults)"
    logger.info(
        "Config %s -> output dir %s (full config: %s)",
        config_name,
        output_dir,
        os.path.join(output_dir, "config_eval.yaml" if getattr(args, "eval_only", False) else "config.yaml"),
    )
    device = cfg.MODEL.DEVICE
    if device.startswith("cuda") and torch.cuda.is_available():
        where = f"{device} ({torch.cuda.get_device_name(comm.get_local_rank())})"
    else:
        where = f"cpu ({cpu_model()}; {cpu_description()}; {torch.get_num_threads()} threads)"
    logger.info("Device: %s; %d process(es)", where, comm.get_world_size())
    seed = seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)  # different sampling per rank; DDP syncs weights
    logger.debug("Global RNG seed: %d", seed)
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)


def save_config(cfg, name: str = "config.yaml") -> str:
    """Write the full config to OUTPUT_DIR/<name> on the main process (atomically; a temp file of this
    process's own). Training calls it once the resumed state has loaded, so a resume that fails leaves
    the run's config.yaml as it was. Returns the path."""
    path = os.path.join(cfg.OUTPUT_DIR, name)
    if comm.is_main_process():
        atomic_write_text(path, cfg.dump())
    return path


def check_thing_classes(cfg, dataset_name: str) -> None:
    """MODEL.ROI_HEADS.NUM_CLASSES must be the number of the training dataset's categories (thing_classes, known
    once it is loaded): fewer would put labels outside the classifier, more would train classes that never occur
    and report them at evaluation. Detection models only (not the classifier)."""
    classes = MetadataCatalog.get(dataset_name).get("thing_classes")
    if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        shown = ", ".join(map(str, classes[:4])) + (", ..." if len(classes) > 4 else "")
        raise ConfigValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but {dataset_name} has "
            f"{len(classes)} categories ({shown}); set MODEL.ROI_HEADS.NUM_CLASSES {len(classes)}"
        )


def check_semantic_classes(cfg, dataset_name: str) -> None:
    """PanopticFPN on a dataset with semantic labels: MODEL.SEM_SEG_HEAD.NUM_CLASSES must be its number of
    semantic classes ("things" + the stuff), or a label would fall outside the head's classes."""
    if cfg.MODEL.META_ARCHITECTURE != "PanopticFPN":
        return
    classes = MetadataCatalog.get(dataset_name).get("stuff_classes")
    if classes is not None and len(classes) != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
        raise ConfigValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} but {dataset_name} has "
            f"{len(classes)} semantic classes ({', '.join(classes[:4])}{', ...' if len(classes) > 4 else ''}); set it "
            f"to {len(classes)}"
        )


def log_data_summary(cfg, train_dicts=None) -> None:
    """One line: the training and test datasets with their numbers of images (and training instances)."""
    parts = []
    if train_dicts is not None:
        if hasattr(train_dicts, "num_annotations"):  # a RecordList: counted without decoding the records
            n_inst = int(train_dicts.num_annotations.sum())
        else:
            n_inst = sum(len(d.get("annotations", ())) for d in train_dicts)
        parts.append(f"train {'+'.join(cfg.DATASETS.TRAIN)}: {len(train_dicts)} images, {n_inst} instances")
    for name in cfg.DATASETS.TEST:
        try:
            parts.append(f"test {name}: {len(get_detection_dataset_dicts([name], filter_empty=False))} images")
        except UserInputError as e:  # reported again, and raised, when the evaluation builds its loader
            parts.append(f"test {name}: not readable ({e})")
    logging.getLogger("detgn.trainer").info("Data: %s", "; ".join(parts) if parts else "none")


def describe_model(cfg, model, verbose: bool = False) -> None:
    """Write the model's structure to OUTPUT_DIR/model.txt (rank 0) and log one line with its size
    and norms; the structure itself is logged only with verbose."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    path = os.path.join(cfg.OUTPUT_DIR, "model.txt")
    if comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        atomic_write_text(path, f"{model}\n\nparameters: {total} total, {trainable} trainable\n")
    m = cfg.MODEL
    norms = f"norms: backbone {m.RESNETS.NORM}"
    detector = getattr(model, "task", "detection") == "detection"
    if detector:
        norms += f", FPN {m.FPN.NORM or 'none'}, box head {m.ROI_BOX_HEAD.NORM or 'none'}"
        if m.MASK_ON:
            norms += f", mask head {m.ROI_MASK_HEAD.NORM or 'none'}"
        if m.META_ARCHITECTURE == "PanopticFPN":
            norms += f", semantic head {m.SEM_SEG_HEAD.NORM or 'none'}"
    r = m.RESNETS
    net = f"ResNeXt-{r.DEPTH} {r.NUM_GROUPS}x{r.WIDTH_PER_GROUP}d" if r.NUM_GROUPS > 1 else f"ResNet-{r.DEPTH}"
    if detector:
        net += f" ({m.BACKBONE.NAME})"
    logging.getLogger("detgn.trainer").info(
        "Model: %s, %s, %s; %.2f M parameters (%.2f M trainable); structure in %s",
        m.META_ARCHITECTURE,
        net,
        norms,
        total / 1e6,
        trainable / 1e6,
        path,
    )
    if verbose:
        logging.getLogger("detgn.trainer").info("Model:\n%s", model)
