"""The command-line frame of the training tools (tools/train_net.py, tools/train_classifier.py):
launch the processes, and turn what a user can fix into one line and an exit status."""

import errno
import os
import shlex
import sys

from detgn.utils.comm import PeerLostError
from detgn.utils.errors import UserInputError

from detgn.utils.interrupt import TrainingPreempted

from .args import default_argument_parser, parse_with_overrides, setup_cfg
from .environment import implied_auto_resume
from .launch import WorkerKilledError, launch
from .output_dir import OutputDirError

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


def _auto_resume(args) -> bool:
    """Whether this start continues the run in OUTPUT_DIR by itself (True: its config must be the same): with
    --auto-resume, or when the job may be a restart (environment.implied_auto_resume). Sets args.resume for it.
    --overwrite applied to the first start of a requeued SLURM job only; under torchrun --max-restarts, where
    a restart cannot be told from a first start on every node, it is refused."""
    why = implied_auto_resume()
    if args.eval_only and args.auto_resume:
        raise OutputDirError("--auto-resume continues a training run; with --eval-only there is none: drop one of them")
    if args.eval_only or not (args.auto_resume or why):
        return False
    if args.overwrite:
        if why and why.startswith("SLURM"):
            args.overwrite = False
        elif why:
            raise OutputDirError(
                f"--overwrite cannot be used when {why}: each restart would move the run aside; move the "
                "old run away yourself or choose a new OUTPUT_DIR"
            )
        else:
            raise OutputDirError(
                "--auto-resume and --overwrite contradict each other: --auto-resume continues the run in "
                "OUTPUT_DIR, --overwrite moves it aside; pass one"
            )
    if why and _hosts_global_rank0(args):
        print(
            f"{why[0].upper()}{why[1:]}: a run of this config in OUTPUT_DIR is continued (--auto-resume)",
            file=sys.stderr,
        )
    auto = not args.resume  # an explicit --resume keeps its meaning (a changed config is allowed)
    args.resume = True
    return auto


def run_training_cli(
    main, argv=None, *, tool: str, description: str = None, check_cfg=None, launch_fn=launch, default_cfg=None
) -> int:
    """Parse the training arguments, check the config before spawning anything (`check_cfg(cfg)` may raise
    ConfigError; `default_cfg()` gives the keys, get_cfg by default), run `main(args)` in every process, and map failures to exit statuses:
    2 a config/data/weights problem (one line), 3 a diverging run, 4 another process of the job stopped,
    128 + N stopped by signal N after saving a checkpoint (utils/interrupt.py), 130 Ctrl-C; a bug keeps its traceback
    (DETGN_TRACEBACK=1 shows it for user errors too)."""
    args = parse_with_overrides(default_argument_parser(description, tool=tool), argv)
    from .launch_checks import check_launch_args
    from .slurm import apply_slurm_environment

    if not args.dist_timeout > 0:
        print(f"error: --dist-timeout must be a number of seconds > 0, got {args.dist_timeout}", file=sys.stderr)
        return 2
    try:  # before anything starts: a wrong layout would otherwise wait --dist-timeout for machines that cannot join
        apply_slurm_environment()  # an srun task: RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* from SLURM (torchrun's own win)
        check_launch_args(args)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        cfg = setup_cfg(args, default_cfg) if default_cfg is not None else setup_cfg(args)
        if check_cfg is not None:
            check_cfg(cfg)
        auto = _auto_resume(args)
        if not args.eval_only and auto:
            # every process reads the check (OUTPUT_DIR is shared), so all of them refuse together instead of the
            # others waiting --dist-timeout seconds for a rank 0 that has exited
            from .output_dir import config_differences

            differ = config_differences(cfg.OUTPUT_DIR, cfg)
            if differ:
                raise OutputDirError(
                    f"--auto-resume: OUTPUT_DIR {cfg.OUTPUT_DIR} holds a run of another config ({differ}); "
                    "continue it with --resume (this config's values win), or choose a new OUTPUT_DIR"
                )
        if not args.eval_only and _hosts_global_rank0(args):
            from .output_dir import claim_output_dir

            moved = claim_output_dir(cfg.OUTPUT_DIR, resume=args.resume, overwrite=args.overwrite)
            if moved:
                print(f"--overwrite: the previous run in {cfg.OUTPUT_DIR} was moved to {moved}", file=sys.stderr)
        if args.eval_only and _hosts_global_rank0(args):
            from .output_dir import lock_for_evaluation

            lock_for_evaluation(cfg.OUTPUT_DIR)  # not into the folder of a training that is still running
    except UserInputError as e:  # ConfigError, OutputDirError
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    use_cuda = cfg.MODEL.DEVICE.startswith("cuda") and torch.cuda.is_available()
    try:
        from datetime import timedelta

        launch_fn(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            use_cuda=use_cuda,
            timeout=timedelta(seconds=args.dist_timeout),
        )
    except FloatingPointError as e:
        print(f"error: {e} {last_checkpoint_hint(cfg, args, tool)}", file=sys.stderr)
        return 3
    except WorkerKilledError as e:
        print(f"error: {e} {last_checkpoint_hint(cfg, args, tool)}", file=sys.stderr)
        return 1
    except PeerLostError as e:
        print(f"error: {e} {last_checkpoint_hint(cfg, args, tool)}", file=sys.stderr)
        return 4
    except TrainingPreempted as e:
        print(
            f"Training {e}. {last_checkpoint_hint(cfg, args, tool)} (or --auto-resume, which a torchrun or SLURM restart "
            "implies)",
            file=sys.stderr,
        )
        return e.exit_status
    except KeyboardInterrupt:
        print(f"interrupted. {last_checkpoint_hint(cfg, args, tool)}", file=sys.stderr)
        return 130
    except (
        UserInputError
    ) as e:  # a config value, dataset, image or weights file the user can fix (ConfigError included)
        if os.environ.get("DETGN_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno != errno.ENOSPC or os.environ.get("DETGN_TRACEBACK"):
            raise
        print(
            f"error: no space left on the device of {cfg.OUTPUT_DIR} ({_free_space(cfg.OUTPUT_DIR)}); free space there "
            f"(a checkpoint of this model needs about {_checkpoint_size(cfg.OUTPUT_DIR)}) and continue. "
            f"{last_checkpoint_hint(cfg, args, tool)}",
            file=sys.stderr,
        )
        return 2
    return 0


def _free_space(path: str) -> str:
    try:
        st = os.statvfs(path)
        return f"{st.f_bavail * st.f_frsize / 2**20:.0f} MB free"
    except OSError:
        return "free space unknown"


def _checkpoint_size(output_dir: str) -> str:
    sizes = (
        [os.path.getsize(os.path.join(output_dir, n)) for n in os.listdir(output_dir) if n.endswith(".pth")]
        if os.path.isdir(output_dir)
        else []
    )
    return f"{max(sizes) / 2**20:.0f} MB" if sizes else "the model's size in float32 plus its optimizer state"
