"""The command-line frame of the training tools (tools/train_net.py, tools/train_classifier.py):
launch the processes, and turn what a user can fix into one line and an exit status."""
import os
import sys

from detgn.utils.errors import UserInputError

from .defaults import ConfigError, default_argument_parser, setup_cfg
from .launch import launch

__all__ = ["last_checkpoint_hint", "run_training_cli"]


def last_checkpoint_hint(cfg, args, tool: str) -> str:
    """'Last checkpoint: DIR/model_X.pth; continue with: ... --resume' (or that there is none)."""
    tag = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    try:
        with open(tag) as f:
            last = os.path.join(cfg.OUTPUT_DIR, f.read().strip())
    except OSError:
        return f"No checkpoint was saved in {cfg.OUTPUT_DIR}."
    cmd = " ".join([os.path.basename(sys.executable), tool] + (["--config-file", args.config_file] if args.config_file else [])
                   + ["--resume"] + list(args.opts))
    return f"Last checkpoint: {last}; continue with: {cmd}"


def run_training_cli(main, argv=None, *, tool: str, description: str = None, check_cfg=None, launch_fn=launch) -> int:
    """Parse the training arguments, check the config before spawning anything (`check_cfg(cfg)` may raise
    ConfigError), run `main(args)` in every process, and map failures to exit statuses:
    2 a config/data/weights problem (one line), 3 a diverging run, 130 Ctrl-C; a bug keeps its traceback
    (DETGN_TRACEBACK=1 shows it for user errors too)."""
    args = default_argument_parser(description).parse_args(argv)
    try:
        cfg = setup_cfg(args)
        if check_cfg is not None:
            check_cfg(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    use_cuda = cfg.MODEL.DEVICE.startswith("cuda") and torch.cuda.is_available()
    try:
        launch_fn(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank, dist_url=args.dist_url,
                  args=(args,), use_cuda=use_cuda)
    except FloatingPointError as e:
        print(f"error: {e} {last_checkpoint_hint(cfg, args, tool)}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"interrupted. {last_checkpoint_hint(cfg, args, tool)}", file=sys.stderr)
        return 130
    except UserInputError as e:  # a config value, dataset, image or weights file the user can fix (ConfigError included)
        if os.environ.get("DETGN_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
