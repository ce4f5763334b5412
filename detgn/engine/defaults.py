"""What tools/train_net.py is made of: argument parser, set-up of the output dir and logging,
and DefaultTrainer (model, optimizer, scheduler, data, checkpoints, hooks, evaluation)."""

import argparse
import inspect
import logging
import os
import random
import sys
import time
from collections import OrderedDict
from typing import Optional

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from detgn.checkpoint import DetectionCheckpointer
from detgn.config import ConfigKeyError, UnsupportedConfigError, check_supported, get_cfg
from detgn.config.rules import check_config
from detgn.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detgn.evaluation import COCOEvaluator, inference_on_dataset
from detgn.evaluation.coco_evaluation import format_metric
from detgn.modeling import build_model
from detgn.solver import build_lr_scheduler, build_optimizer
from detgn.utils import comm
from detgn.utils.atomic import atomic_write_text
from detgn.utils.errors import ConfigValueError, UserInputError
from detgn.utils.events import CommonMetricPrinter, JSONWriter, TensorboardWriter
from detgn.utils.logger import setup_logger

from . import hooks
from .accumulation import VirtualRankStreams, accumulation_norm_warning, resolve_batch_layout, steps_note
from .precision import log_precision, resolve_inference_precision, resolve_precision
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

__all__ = [
    "default_argument_parser",
    "parse_with_overrides",
    "default_setup",
    "setup_cfg",
    "setup_cfg_or_exit",
    "DefaultTrainer",
    "seed_all_rng",
    "ConfigError",
    "describe_model",
    "log_data_summary",
    "save_config",
]


class ConfigError(UserInputError, ValueError):
    """A config file, override or output directory problem, reported in one line."""


def default_argument_parser(description: str = None, tool: str = "tools/train_net.py") -> argparse.ArgumentParser:
    """The training tools' command line (detectron2's name); `tool` names the script in the examples."""
    if tool.endswith("train_classifier.py"):
        examples = (
            f"  python {tool} --config-file configs/ImageNet/R_50_GN_100ep.yaml CLASSIFIER.TRAIN_DIR train/ "
            "CLASSIFIER.VAL_DIR val/\n"
            f"  python {tool} --config-file cfg.yaml --resume\n"
            f"  python {tool} --config-file cfg.yaml --eval-only MODEL.WEIGHTS out/model_final.pth\n"
        )
    else:
        examples = (
            f"  python {tool} --config-file configs/nuclei_quickstart.yaml\n"
            f"  python {tool} --config-file cfg.yaml --resume\n"
            f"  python {tool} --config-file cfg.yaml --eval-only MODEL.WEIGHTS out/model_final.pth\n"
            f"  python {tool} --config-file cfg.yaml --num-gpus 8 SOLVER.IMS_PER_BATCH 16\n"
            f"  (machine 0 of 2) python {tool} --config-file cfg.yaml --num-gpus 8 --num-machines 2 \\\n"
            "      --machine-rank 0 --dist-url tcp://10.0.0.1:29500\n"
        )
    p = argparse.ArgumentParser(
        description=description or "Train or evaluate a detgn model (GN Mask R-CNN).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n" + examples,
    )
    p.add_argument("--config-file", default="", metavar="FILE", help="path to a YAML config file")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint if it exists")
    p.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue the run in OUTPUT_DIR when it holds one of this same config (start afresh when it holds none; "
        "refuse when its config.yaml differs). Implied when the job may be a restart: under torchrun "
        "--max-restarts (TORCHELASTIC_MAX_RESTARTS > 0) or a SLURM requeue (SLURM_RESTART_COUNT > 0)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="OUTPUT_DIR holds a finished or interrupted run: rename it to OUTPUT_DIR.old-<time> and start afresh "
        "(without this flag such a folder is refused)",
    )
    p.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS on DATASETS.TEST and exit")
    p.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="with --eval-only: evaluate even when MODEL.WEIGHTS leaves parameters of the model at their random "
        "initialisation (weights of another architecture or class count; refused without this flag)",
    )
    p.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes per machine (one per GPU; CPU processes with MODEL.DEVICE cpu)",
    )
    p.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    p.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0 .. num-machines - 1)")
    p.add_argument(
        "--dist-url", default="auto", help="torch.distributed init URL, e.g. tcp://host:port (auto: a free local port)"
    )
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="how long a process waits for the others to join, and for a collective (default 1800, as detectron2)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also print the full config and model structure (always written to OUTPUT_DIR/config.yaml and model.txt)",
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.01 OUTPUT_DIR out/",
    )
    return p


def parse_with_overrides(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """parser.parse_args, where options may also follow the KEY VALUE overrides (`... OUTPUT_DIR out --resume`):
    a token starting with "--" in a key position is parsed as the option it names (with its value, if it takes
    one), not swallowed as a config key. The parser's REMAINDER positional must be named `opts`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    takes_value = {opt: a.nargs != 0 for a in parser._actions for opt in a.option_strings}
    overrides, flags, i = [], [], 0
    opts = list(args.opts)
    while i < len(opts):
        token = opts[i]
        name = token.split("=", 1)[0]
        if token.startswith("--") and name in takes_value:
            n = 2 if takes_value[name] and "=" not in token else 1
            flags += opts[i : i + n]
            i += n
        elif token.startswith("--"):
            parser.error(f"unknown option {token} (config keys are written without dashes, e.g. SOLVER.BASE_LR 0.01)")
        else:
            overrides += opts[i : i + 2]
            i += 2
    if flags:  # the REMAINDER is argv's tail: parse the rest with the options moved before it
        args = parser.parse_args(argv[: len(argv) - len(opts)] + flags)
    args.opts = overrides
    return args


# what reading a YAML config or a KEY VALUE override raises for a bad file or value (yacs/fvcore check
# types with ValueError/TypeError and a few invariants with AssertionError); anything else is a bug
_CONFIG_READ_ERRORS = (yaml.YAMLError, ValueError, TypeError, KeyError, AssertionError, OSError, UnicodeDecodeError)


def setup_cfg(args, default_cfg=get_cfg):
    """Config from --config-file and KEY VALUE overrides merged into `default_cfg()` (get_cfg for detectors,
    get_classifier_cfg for tools/train_classifier.py); problems become ConfigError (one line)."""
    cfg = default_cfg()
    if args.config_file:
        if not os.path.isfile(args.config_file):
            raise ConfigError(f"Config file not found: {args.config_file}")
        try:
            cfg.merge_from_file(args.config_file)
        except ConfigKeyError as e:
            raise ConfigError(f"{args.config_file}: {e}") from e
        except UserInputError as e:  # unsafe YAML, _BASE_ cycle, not a mapping: the message names the file
            raise ConfigError(str(e)) from e
        except _CONFIG_READ_ERRORS as e:  # YAML syntax, a value of the wrong type, an unreadable _BASE_ ...
            raise ConfigError(f"Cannot read config {args.config_file}: {type(e).__name__}: {e}") from e
    try:
        cfg.merge_from_list(args.opts)
    except ConfigKeyError as e:
        raise ConfigError(f"command line override: {e}") from e
    except _CONFIG_READ_ERRORS as e:
        raise ConfigError(f"command line override {args.opts}: {type(e).__name__}: {e}") from e
    try:
        check_supported(cfg)
        check_config(cfg)
        world = _training_world_size(args)
        if world:  # the batch layout this job will train with: sizes that do not divide are refused now
            resolve_batch_layout(cfg, world)
    except (UnsupportedConfigError, ConfigValueError) as e:
        raise ConfigError(str(e)) from e
    return cfg


def _training_world_size(args) -> Optional[int]:
    """Processes of the training job these arguments start (None for tools that do not train)."""
    if not hasattr(args, "num_gpus") or getattr(args, "eval_only", False):
        return None
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return args.num_gpus * getattr(args, "num_machines", 1)


def setup_cfg_or_exit(args, default_cfg=get_cfg):
    """setup_cfg for command-line tools: a config problem prints one line and exits with status 2."""
    try:
        return setup_cfg(args, default_cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


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
    from .precision import cpu_description, cpu_model

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


_SOLVER_KEYS = {
    "momentum": "SOLVER.MOMENTUM",
    "nesterov": "SOLVER.NESTEROV",
    "weight_decay": "SOLVER.WEIGHT_DECAY(_NORM/_BIAS)",
    "dampening": "(SGD dampening)",
}


def _optimizer_settings(optimizer):
    return [{k: g.get(k) for k in _SOLVER_KEYS} for g in optimizer.param_groups]


def _reapply_solver_settings(optimizer, scheduler, settings, base_lrs, *, start_iter: int, logger) -> None:
    """torch restores each param group's momentum/weight decay and the scheduler's base LRs from the
    checkpoint; the config's values win, with a WARNING for each that changed (a resume with a new
    SOLVER.BASE_LR trains at that LR from `start_iter` on, following the schedule)."""
    changed = set()
    for group, wanted in zip(optimizer.param_groups, settings):
        for k, v in wanted.items():
            if group.get(k) != v:
                changed.add((_SOLVER_KEYS[k], group.get(k), v))
                group[k] = v
    old = list(scheduler.base_lrs)
    if old != base_lrs:
        changed.add(("SOLVER.BASE_LR (and BIAS_LR_FACTOR)", max(old), max(base_lrs)))
        scheduler.base_lrs = list(base_lrs)
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["initial_lr"] = lr
    for group, lr in zip(optimizer.param_groups, scheduler.get_lr()):
        group["lr"] = lr
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    for key, was, now in sorted(changed, key=str):
        logger.warning(
            "--resume: %s changed since the checkpoint (%s -> %s); training continues with %s from iteration %d",
            key,
            was,
            now,
            now,
            start_iter,
        )


def _check_resumed_model(report, path: str, output_dir: str) -> None:
    """A resumed checkpoint must fit the model exactly (else the optimizer state fails later, mid-step)."""
    if not report:
        return
    problems = [f"{k}: checkpoint {tuple(a)} vs config {tuple(b)}" for k, a, b in report["shape_mismatch"][:2]]
    problems += [f"{k} missing from the checkpoint" for k in report["missing"][:2]]
    if problems:
        raise ConfigError(
            f"--resume: {path} does not fit the model this config builds ({'; '.join(problems)}); resume with the "
            f"config it was trained with ({os.path.join(output_dir, 'config.yaml')}), or fine-tune from it with "
            f"MODEL.WEIGHTS {path} and a new OUTPUT_DIR"
        )


def _check_every_rank_sees_the_checkpoint(output_dir: str) -> None:
    """Before a multi-process resume: every rank must find the same checkpoint (name and size) in OUTPUT_DIR."""
    import socket

    from detgn.checkpoint.resume import check_same_view, find_resumable

    path = find_resumable(output_dir)[0]
    mine = f"{os.path.basename(path)} ({os.path.getsize(path)} bytes)" if path else None
    check_same_view(output_dir, comm.all_gather((socket.gethostname(), mine)))


_DDP_ARGS = set(inspect.signature(DistributedDataParallel.__init__).parameters)


def _rng_states_of_this_process(ckpt: dict, first_rank: int, k: int, logger):
    """The RNG states the k virtual ranks first_rank .. first_rank + k - 1 of this process had at the checkpoint
    (its rng_per_rank[v]; accumulation.py), None for a rank the checkpoint has none of. A checkpoint of another
    number of ranks resumes the streams it has: with more ranks now, the extra ones keep their fresh seeds
    (SEED + rank); a checkpoint with one state only (older detgn) restores rank 0's only, so no two ranks ever draw
    the same random numbers."""
    per_rank = ckpt.get("rng_per_rank")
    if not per_rank:
        per_rank = [ckpt["rng"]] if ckpt.get("rng") is not None else []
    virtual_world = comm.get_world_size() * k
    if len(per_rank) != virtual_world and comm.get_rank() == 0:
        ranks = (
            f"{virtual_world} processes"
            if k == 1
            else f"{virtual_world} ranks ({comm.get_world_size()} x {k} micro-batches)"
        )
        logger.info(
            "Resuming %s from a checkpoint of %d: the images and their augmentations continue as before; the model's "
            "random sampling (anchors, proposals) continues the saved streams of ranks < %d only",
            ranks,
            len(per_rank),
            min(virtual_world, len(per_rank)),
        )
    return [per_rank[v] if v < len(per_rank) else None for v in range(first_rank, first_rank + k)]


class DefaultTrainer(TrainerBase):
    """Builds everything from the config and trains with the standard hooks.

    trainer = DefaultTrainer(cfg)
    trainer.register_hooks([MyHook()])  # optional: they run before the checkpointer and the writers
    trainer.resume_or_load(resume=args.resume)
    trainer.train()

    It is the TrainerBase the hooks see (`hook.trainer`: iter, max_iter, storage, flush()); each step is
    run by a SimpleTrainer or AMPTrainer (`build_trainer`, as the precision policy decides). Its
    state_dict (the hooks' states and the loop's fp16 loss scale) is saved in every checkpoint under
    "trainer" and given back to the hooks on resume.
    """

    def __init__(self, cfg, verbose: bool = False):
        super().__init__()
        self.logger = logging.getLogger("detgn.trainer")
        cfg, self.micro_batches = resolve_batch_layout(cfg, comm.get_world_size())
        self.cfg = cfg
        # micro-batch j of this process is rank (rank x k + j) of a job of world x k processes (accumulation.py)
        self.streams = VirtualRankStreams(self.micro_batches, comm.get_rank() * self.micro_batches)
        self.train_dicts = self.load_train_data()  # fail fast on bad data paths, before the model is built
        self.model = build_model(cfg)
        describe_model(cfg, self.model, verbose=verbose)
        s = cfg.SOLVER
        warning = accumulation_norm_warning(self.model, self.micro_batches)
        if warning:
            self.logger.warning(warning)
        self.logger.info(
            "Schedule: %d iterations x %d images%s, base LR %g, LR steps %s, warm-up %d iterations; "
            "checkpoint every %d, evaluation %s",
            s.MAX_ITER,
            s.IMS_PER_BATCH,
            steps_note(self.micro_batches, s.IMS_PER_BATCH // (comm.get_world_size() * self.micro_batches)),
            s.BASE_LR,
            tuple(s.STEPS),
            s.WARMUP_ITERS,
            s.CHECKPOINT_PERIOD,
            f"every {cfg.TEST.EVAL_PERIOD} and at the end" if cfg.TEST.EVAL_PERIOD > 0 else "at the end",
        )
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.device = next(self.model.parameters()).device
        self._trainer = None  # the SimpleTrainer / AMPTrainer that runs each step, built by train()
        self.checkpointer = DetectionCheckpointer(
            self.model, cfg.OUTPUT_DIR, optimizer=self.optimizer, scheduler=self.scheduler
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.data_seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        self._resumed_state = None  # the checkpoint's "trainer" entry, given to the hooks and the loop in train()
        self._rng_state = None

    def load_train_data(self):
        """The training records (detection dataset dicts of DATASETS.TRAIN), logged with the test sets' sizes."""
        dicts = get_detection_dataset_dicts(
            self.cfg.DATASETS.TRAIN, filter_empty=self.cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        log_data_summary(self.cfg, dicts)
        for name in self.cfg.DATASETS.TRAIN:  # the datasets are loaded: their classes are known
            check_thing_classes(self.cfg, name)
            check_semantic_classes(self.cfg, name)
        return dicts

    def has_evaluation(self) -> bool:
        return bool(self.cfg.DATASETS.TEST)

    def resume_or_load(self, resume: bool = True) -> None:
        """resume=True and a checkpoint in OUTPUT_DIR: restore everything and continue after its
        iteration; otherwise load MODEL.WEIGHTS into the model only."""
        if resume and comm.get_world_size() > 1:
            _check_every_rank_sees_the_checkpoint(self.cfg.OUTPUT_DIR)
        resuming = resume and self.checkpointer.has_checkpoint()
        from_config = _optimizer_settings(self.optimizer), list(self.scheduler.base_lrs)
        ckpt = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resuming:
            path = self.checkpointer.get_checkpoint_file()
            _check_resumed_model(self.checkpointer.last_report, path, self.cfg.OUTPUT_DIR)
            self.start_iter = ckpt.get("iteration", -1) + 1
            if self.start_iter > self.max_iter:
                raise ConfigError(
                    f"--resume: {path} has trained {self.start_iter} iterations, more than SOLVER.MAX_ITER "
                    f"{self.max_iter}; raise SOLVER.MAX_ITER to train on, or use --eval-only MODEL.WEIGHTS {path}"
                )
            self.data_seed = ckpt.get("data_seed", self.data_seed)
            # detgn before hooks had state saved the loop's loss scale alone, as "amp"
            self._resumed_state = ckpt.get("trainer") or {"hooks": {}, "loop": ckpt.get("amp") or {}}
            self._rng_state = _rng_states_of_this_process(
                ckpt, self.streams.first_rank, self.micro_batches, self.logger
            )
            _reapply_solver_settings(
                self.optimizer, self.scheduler, *from_config, start_iter=self.start_iter, logger=self.logger
            )
            if self.start_iter == self.max_iter:
                self.logger.info(
                    "Resuming: %s finished all SOLVER.MAX_ITER %d iterations; nothing left to train (raise "
                    "SOLVER.MAX_ITER to train longer)",
                    path,
                    self.max_iter,
                )
            else:
                self.logger.info("Resuming from iteration %d", self.start_iter)

    def build_hooks(self):
        """Timer, LR schedule, evaluation, checkpoints, writers, in that order: an evaluation's
        results and the iteration's metrics row reach metrics.json before its checkpoint is saved."""
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler(self.optimizer, self.scheduler)]
        if self.has_evaluation():
            ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(cfg, self.model)))
            if cfg.TEST.AUG.ENABLED:  # after the last iteration only, as detectron2's train_net
                ret.append(hooks.EvalHook(0, lambda: self.test_with_TTA(cfg, self.model)))
        writers = self.build_writers() if comm.is_main_process() else []
        json_writers = [w for w in writers if w.before_checkpoint]
        ret.append(
            hooks.PeriodicCheckpointer(
                self.checkpointer,
                cfg.SOLVER.CHECKPOINT_PERIOD,
                self.max_iter,
                cfg.SOLVER.MAX_TO_KEEP,
                extra_state=lambda: {"data_seed": self.data_seed, "trainer": self.state_dict()},
                before_save=lambda: [w.write() for w in json_writers],
            )
        )
        if writers:
            ret.append(hooks.PeriodicWriter(writers, period=cfg.LOG_PERIOD))
        return ret

    def build_writers(self) -> list:
        """The EventWriters of the main process (utils/events.py): the console line, metrics.json and TensorBoard.
        Override to add or replace a backend:

            class MyTrainer(DefaultTrainer):
                def build_writers(self):
                    return super().build_writers() + [MyWriter()]
        """
        return [
            CommonMetricPrinter(
                self.max_iter,
                step_note=f"{self.micro_batches} micro-batches" if self.micro_batches > 1 else "",
            ),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter),
            TensorboardWriter(self.cfg.OUTPUT_DIR),
        ]

    def build_train_loader(self):
        return build_detection_train_loader(
            self.cfg, start_iter=self.start_iter, seed=self.data_seed, dataset=self.train_dicts
        )

    def _wrap(self, model):
        if comm.get_world_size() > 1:
            ids = [comm.get_local_rank()] if self.device.type == "cuda" else None
            # buffers (BN statistics) stay per rank during training; torch >= 2.12 names that forward_sync_buffers
            no_sync = (
                {"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_ARGS else {"broadcast_buffers": False}
            )
            return DistributedDataParallel(model, device_ids=ids, **no_sync)
        return model

    def build_trainer(self, model, loader):
        """SimpleTrainer (float32) or AMPTrainer, as the precision policy decides for this config and machine."""
        cfg = self.cfg
        # rank 0 first: where the CPU's bf16 speed is measured (precision.py), it measures and caches once, and the
        # other ranks read its decision instead of timing side by side
        several = comm.get_world_size() > 1
        if several and not comm.is_main_process():
            comm.synchronize()
        precision = resolve_precision(cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.DTYPE, self.device.type)
        if several and comm.is_main_process():
            comm.synchronize()
        log_precision(precision, "training")
        steps = dict(flush_period=cfg.LOG_PERIOD, micro_batches=self.micro_batches, streams=self.streams)
        if precision.dtype is None:
            return SimpleTrainer(model, loader, self.optimizer, **steps)
        return AMPTrainer(model, loader, self.optimizer, dtype=precision.name, device_type=self.device.type, **steps)

    def rng_states(self):
        """The random states of this process's ranks (one per micro-batch), as checkpoints store them."""
        return self.streams.states()

    def train(self):
        """Train from start_iter to SOLVER.MAX_ITER with the standard hooks (build_hooks) and those registered
        before; returns the last evaluation's results (None without evaluation). Runs once."""
        if self._trainer is not None:
            raise RuntimeError("DefaultTrainer.train() runs once; build a new DefaultTrainer to train again")
        self._trainer = self.build_trainer(self._wrap(self.model), self.build_train_loader())
        # the hooks registered before train() run after the timer, LR and evaluation hooks and before the
        # checkpointer, so that each checkpoint holds their state after the same iteration as the model's
        registered, self._hooks = list(self._hooks), []
        self.register_hooks(self.build_hooks())
        at = next((i for i, h in enumerate(self._hooks) if isinstance(h, hooks.PeriodicCheckpointer)), len(self._hooks))
        self._hooks[at:at] = registered
        if self._resumed_state is not None:
            self.load_state_dict(self._resumed_state)
        # each rank's random stream (ROI / anchor sampling) starts from SEED + rank, or, on resume, continues
        # exactly as it was right after the saved iteration
        self.streams.seed(None if self.cfg.SEED < 0 else self.cfg.SEED)
        if self._rng_state is not None:
            self.streams.load(self._rng_state)
        super().train(self.start_iter, self.max_iter)
        eval_hooks = [h for h in self.hooks if isinstance(h, hooks.EvalHook)]
        return eval_hooks[0].last_results if eval_hooks else None

    def run_step(self):
        loop = self._trainer
        loop.iter, loop.start_iter, loop.max_iter = self.iter, self.start_iter, self.max_iter
        loop.run_step()

    def flush(self) -> None:
        """The loop's buffered losses to the event storage, and its finiteness check (SimpleTrainer.flush)."""
        self._trainer.flush()

    def state_dict(self) -> dict:
        """TrainerBase's (iteration, the hooks' states) and "loop": the step runner's (the fp16 loss scale)."""
        state = super().state_dict()
        if self._trainer is not None:
            state["loop"] = {k: v for k, v in self._trainer.state_dict().items() if k not in ("iteration", "hooks")}
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self._trainer is not None and state.get("loop"):
            self._trainer.load_state_dict(state["loop"])

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
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
                    COCOEvaluator(
                        dataset_name, tasks=tasks, output_dir=output_folder, backend=cfg.TEST.EVALUATOR_BACKEND
                    ),
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

    @classmethod
    def test(cls, cfg, model, evaluators=None, task_suffix: str = ""):
        """Evaluate on every DATASETS.TEST; returns {dataset: {task: {metric: value}}}, also for one dataset.

        evaluators: None (cls.build_evaluator for each dataset, as detectron2), one DatasetEvaluator (with one test
        dataset), or a list of them, one per DATASETS.TEST entry in the same order. task_suffix: appended to each
        task's name in the results and the log ("_TTA": bbox_TTA)."""
        if evaluators is not None:
            evaluators = [evaluators] if not isinstance(evaluators, (list, tuple)) else list(evaluators)
            if len(evaluators) != len(cfg.DATASETS.TEST):
                raise ValueError(
                    f"DefaultTrainer.test got {len(evaluators)} evaluator(s) for {len(cfg.DATASETS.TEST)} test "
                    f"dataset(s) {list(cfg.DATASETS.TEST)}: pass one per DATASETS.TEST entry"
                )
        results = OrderedDict()
        device_type = next(model.parameters()).device.type
        precision = resolve_inference_precision(cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.DTYPE, device_type)
        amp = precision.dtype
        log_precision(precision, "evaluation")
        for idx, name in enumerate(cfg.DATASETS.TEST):
            loader = build_detection_test_loader(cfg, name)
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name)
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

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate `model` with test-time augmentation (TEST.AUG.*, modeling/test_time_augmentation.py) on every
        DATASETS.TEST; results as test() gives them with each task renamed task_TTA (bbox_TTA, segm_TTA), files
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
            cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        return cls.test(cfg, tta, evaluators, task_suffix="_TTA")
