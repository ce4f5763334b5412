"""Job control: the training tools' command line (args.py, cli.py), starting the processes of a job on one or
many machines (launch.py, launch_checks.py), SLURM and submitit (slurm.py, submit.py, environment.py), and the
output directory a run owns (output_dir.py). It builds on detgn.engine; the engine never imports it."""

from .args import ConfigError, default_argument_parser, parse_with_overrides, setup_cfg, setup_cfg_or_exit
from .cli import run_training_cli
from .environment import implied_auto_resume, torchrun_env
from .launch import launch

__all__ = [k for k in globals() if not k.startswith("_")]
