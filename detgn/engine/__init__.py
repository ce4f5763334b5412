from .defaults import (
    ConfigError,
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    describe_model,
    log_data_summary,
    save_config,
    seed_all_rng,
    setup_cfg,
    setup_cfg_or_exit,
)
from .hooks import EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter
from .launch import launch
from .predictor import DefaultPredictor
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [k for k in globals() if not k.startswith("_")]
