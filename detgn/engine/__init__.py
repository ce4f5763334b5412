"""The training engine: the loop and its step runners, hooks, DefaultTrainer, the resume policy, set-up and
reporting, evaluation on the test sets, and inference (DefaultPredictor). Starting processes and jobs, the
command line and the output directory are detgn.jobs, which imports this package (never the reverse)."""

from detgn.config import ConfigError

from .best_checkpoint import BestCheckpointer
from .ema import EMAHook, ModelEMA
from .hooks import EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter
from .predictor import DefaultPredictor
from .setup import default_setup, describe_model, log_data_summary, save_config, seed_all_rng
from .step_runner import AMPStepRunner, StepRunner
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase
from .trackers import MLflowWriter, WandbWriter
from .trainer import DefaultTrainer

__all__ = [k for k in globals() if not k.startswith("_")]

# names detectron2's detectron2.engine (and detgn before 0.5) exports that live in detgn.jobs now
_MOVED = {
    "launch": "detgn.jobs",
    "default_argument_parser": "detgn.jobs",
    "parse_with_overrides": "detgn.jobs",
    "setup_cfg": "detgn.jobs",
    "setup_cfg_or_exit": "detgn.jobs",
    "run_training_cli": "detgn.jobs",
}


def __getattr__(name):
    if name in _MOVED:
        raise ImportError(
            f"detgn.engine.{name} moved to {_MOVED[name]}: write `from {_MOVED[name]} import {name}` "
            "(job control is its own package; docs/ARCHITECTURE.md)"
        )
    raise AttributeError(f"module 'detgn.engine' has no attribute {name!r}")
