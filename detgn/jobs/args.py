"""The training tools' command line: the argument parser, and the config it describes (`setup_cfg`: the
--config-file merged with KEY VALUE overrides and checked against every rule, before any process starts)."""

import argparse
import os
import sys
from typing import Optional

import yaml

from detgn.config import ConfigError, ConfigKeyError, UnsupportedConfigError, check_supported, get_cfg
from detgn.config.rules import check_config
from detgn.engine.accumulation import resolve_batch_layout
from detgn.utils.errors import ConfigValueError, UserInputError

__all__ = ["ConfigError", "default_argument_parser", "parse_with_overrides", "setup_cfg", "setup_cfg_or_exit"]


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
