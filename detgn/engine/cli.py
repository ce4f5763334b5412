"""The command-line frame of the training tools (tools/train_net.py, tools/train_classifier.py):
launch the processes, and turn what a user can fix into one line and an exit status."""
import errno
import os
import shlex
import sys

from detgn.utils.errors import UserInputError

from .defaults import default_argument_parser, parse_with_overrides, setup_cfg
from .launch import launch

__all__ = ["last_checkpoint_hint", "run_training_cli"]


def resume_command(args, tool: str) -> str:
    """The command line that continues this run, shell-quoted (`--overwrite` dropped, `--resume` added)."""
    argv = [os.path.basename(sys.executable), tool] + (["--config-file", args.config_file] if args.config_file else [])
    if getattr(args, "num_gpus", 1) != 1:
        argv += ["--num-gpus", str(args.num_gpus)]
    return shlex.join(argv + ["--resume"] + list(args.opts))


def last_checkpoint_hint(cfg, args, tool: str) -> str:
    """'Last checkpoint: DIR/model_X.pth; continue with: ... --resume' (or that there is none)."""
    from detgn.checkpoint.resume import find_resumable

    last, problem = find_resumable(cfg.OUTPUT_DIR)
    if last is None:
        return f"No checkpoint was saved in {cfg.OUTPUT_DIR}." if problem is None else problem
    return f"Last checkpoint: {last}; continue with: {resume_command(args, tool)}"


def _hosts_global_rank0(args) -> bool:
    """True in the process that runs (or spawns) global rank 0: machine rank 0, or RANK=0 under torchrun."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return os.environ["RANK"] == "0"
    return args.machine_rank == 0


def run_training_cli(main, argv=None, *, tool: str, description: str = None, check_cfg=None, launch_fn=launch) -> int:
    """Parse the training arguments, check the config before spawning anything (`check_cfg(cfg)` may raise
    ConfigError), run `main(args)` in every process, and map failures to exit statuses:
    2 a config/data/weights problem (one line), 3 a diverging run, 130 Ctrl-C; a bug keeps its traceback
    (DETGN_TRACEBACK=1 shows it for user errors too)."""
    args = parse_with_overrides(default_argument_parser(description), argv)
    from .slurm import apply_slurm_environment

    apply_slurm_environment()  # an srun task: RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* from SLURM (torchrun's own win)
    if not args.dist_timeout > 0:
        print(f"error: --dist-timeout must be a number of seconds > 0, got {args.dist_timeout}", file=sys.stderr)
        return 2
    try:
        cfg = setup_cfg(args)
        if check_cfg is not None:
            check_cfg(cfg)
        if not args.eval_only and _hosts_global_rank0(args):
            from .output_dir import claim_output_dir

            moved = claim_output_dir(cfg.OUTPUT_DIR, resume=args.resume, overwrite=args.overwrite)
            if moved:
                print(f"--overwrite: the previous run in {cfg.OUTPUT_DIR} was moved to {moved}", file=sys.stderr)
    except UserInputError as e:  # ConfigError, OutputDirError
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    use_cuda = cfg.MODEL.DEVICE.startswith("cuda") and torch.cuda.is_available()
    try:
        from datetime import timedelta

        launch_fn(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank, dist_url=args.dist_url,
                  args=(args,), use_cuda=use_cuda, timeout=timedelta(seconds=args.dist_timeout))
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
    except OSError as e:
        if e.errno != errno.ENOSPC or os.environ.get("DETGN_TRACEBACK"):
            raise
        print(f"error: no space left on the device of {cfg.OUTPUT_DIR} ({_free_space(cfg.OUTPUT_DIR)}); free space there "
              f"(a checkpoint of this model needs about {_checkpoint_size(cfg.OUTPUT_DIR)}) and continue. "
              f"{last_checkpoint_hint(cfg, args, tool)}", file=sys.stderr)
        return 2
    return 0


def _free_space(path: str) -> str:
    try:
        st = os.statvfs(path)
        return f"{st.f_bavail * st.f_frsize / 2 ** 20:.0f} MB free"
    except OSError:
        return "free space unknown"


def _checkpoint_size(output_dir: str) -> str:
    sizes = [os.path.getsize(os.path.join(output_dir, n)) for n in os.listdir(output_dir) if n.endswith(".pth")] if os.path.isdir(output_dir) else []
    return f"{max(sizes) / 2 ** 20:.0f} MB" if sizes else "the model's size in float32 plus its optimizer state"
