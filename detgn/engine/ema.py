"""An exponential moving average (EMA) of the model's weights, kept while training and evaluated in their place.

Semantics (detectron2's d2go `ModelEMA`, with mmdetection's `ExpMomentumEMA` warm-up as an option): after every
optimizer step t (0-based iteration; with gradient accumulation, once per step, not per micro-batch), every
floating-point entry of the model's state_dict (parameters and buffers) moves as

    ema = d_t * ema + (1 - d_t) * weight,   d_t = MODEL_EMA.DECAY                                 (WARMUP_ITERS 0)
                                             d_t = MODEL_EMA.DECAY * (1 - exp(-(t + 1) / WARMUP_ITERS))  (else)

and the other entries (integer buffers) are copied. The warm-up form is mmdetection's ExpMomentumEMA with
momentum = 1 - DECAY and gamma = WARMUP_ITERS (YOLOX's recipe): early averages follow the weights closely instead
of holding on to the random initialisation. The average starts as a copy of the weights when training starts
(from MODEL.WEIGHTS), is kept in float32 on the model's device, and is saved in every checkpoint as "ema", so a
resumed run continues it exactly. DDP replicas hold the same weights, so every rank's average is the same.

Evaluation during and after training uses MODEL_EMA.EVAL: "ema" (the average, results named as usual), "raw" (the
weights as trained) or "both" (raw as usual, the average with tasks named <task>_EMA); the log names which.
Inference tools (DefaultPredictor, demo, export, --eval-only) load a checkpoint's "ema" weights when EMA is
enabled (unless EVAL is "raw") and say so.
"""

import contextlib
import logging
import math
from typing import Dict

import torch

from detgn.config.components import config_function
from detgn.config.config import CfgNode as CN
from detgn.config.rules import between, ge, one_of

from .train_loop import HookBase

__all__ = ["add_ema_config", "ModelEMA", "EMAHook", "ema_decay", "uses_ema_weights", "evaluate_weights"]

logger = logging.getLogger(__name__)


_DEFAULTS = {"DECAY": 0.9998, "WARMUP_ITERS": 0, "EVAL": "ema"}


def _settings_without_ema(c):
    """MODEL_EMA's settings do something only with MODEL_EMA.ENABLED."""
    if c.MODEL_EMA.ENABLED:
        return None
    for key, default in _DEFAULTS.items():
        if c.MODEL_EMA[key] != default:
            return (f"MODEL_EMA.{key}", c.MODEL_EMA[key], f"its default {default!r} unless MODEL_EMA.ENABLED is True")
    return None


@config_function(
    rules={
        "MODEL_EMA.DECAY": between(0.0, 1.0, hi_open=True),
        "MODEL_EMA.WARMUP_ITERS": ge(0),
        "MODEL_EMA.EVAL": one_of("ema", "raw", "both"),
    },
    relations=[("EMA settings only with MODEL_EMA.ENABLED", _settings_without_ema)],
)
def add_ema_config(cfg) -> None:
    """MODEL_EMA.* (d2go's root name; the module docstring has the semantics)."""
    e = cfg.MODEL_EMA = CN()
    e.ENABLED = False  # keep an exponential moving average of the weights while training
    e.DECAY = 0.9998  # d of ema = d * ema + (1 - d) * weight after each optimizer step
    e.WARMUP_ITERS = 0  # > 0: d_t = DECAY * (1 - exp(-(t + 1) / WARMUP_ITERS)) (mmdetection's ExpMomentumEMA)
    e.EVAL = "ema"  # evaluate "ema" (the average), "raw" (the trained weights) or "both" (tasks <task>_EMA)


def ema_decay(decay: float, warmup_iters: int, iteration: int) -> float:
    """d_t of the module docstring for the optimizer step of `iteration` (0-based)."""
    if warmup_iters <= 0:
        return decay
    return decay * (1.0 - math.exp(-(iteration + 1) / warmup_iters))


def uses_ema_weights(cfg) -> bool:
    """Whether inference from this config's checkpoints should load their EMA weights."""
    return bool(cfg.MODEL_EMA.ENABLED) and cfg.MODEL_EMA.EVAL != "raw"


class ModelEMA:
    """The average of a model's state_dict: `update(model, decay)` after each step, `swapped_in(model)` to evaluate
    it, `state_dict()` / `load_state_dict()` for checkpoints."""

    def __init__(self, model: torch.nn.Module):
        self.state: Dict[str, torch.Tensor] = {
            k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
            for k, v in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: torch.nn.Module, decay: float) -> None:
        current = model.state_dict()
        keys = [k for k, v in self.state.items() if v.is_floating_point()]
        averaged = [self.state[k] for k in keys]
        weights = [current[k].detach().float() for k in keys]
        if averaged:
            torch._foreach_lerp_(averaged, weights, 1.0 - decay)
        for k, v in self.state.items():
            if not v.is_floating_point():
                v.copy_(current[k])

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The model holds the average inside the block and its own weights again after it (bit for bit)."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in self.state.items()})
        try:
            yield model
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return dict(self.state)

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.state) - set(state))
        if missing:
            raise KeyError(f"the checkpoint's EMA weights lack {missing[:3]}: it was trained with another model")
        for k, v in self.state.items():
            v.copy_(state[k])


class EMAHook(HookBase):
    """Updates a ModelEMA after every optimizer step (before evaluation and checkpoint hooks of that step)."""

    def __init__(self, ema: ModelEMA, model: torch.nn.Module, *, decay: float, warmup_iters: int):
        self.ema, self.model = ema, model
        self.decay, self.warmup_iters = float(decay), int(warmup_iters)

    def after_step(self):
        self.ema.update(self.model, ema_decay(self.decay, self.warmup_iters, self.trainer.iter))


def evaluate_weights(mode: str, model: torch.nn.Module, ema, run):
    """`run(task_suffix)` -> {dataset: {task: metrics}} for the weights MODEL_EMA.EVAL `mode` names: "raw" (or no
    average), "ema", or "both" (the average's tasks suffixed _EMA, merged into the raw results)."""
    if ema is None or mode == "raw":
        if ema is not None:
            logger.info("Evaluating the raw weights (MODEL_EMA.EVAL raw)")
        return run("")
    if mode == "ema":
        logger.info("Evaluating the EMA weights (MODEL_EMA.EVAL ema)")
        with ema.swapped_in(model):
            return run("")
    logger.info("Evaluating the raw weights, then the EMA weights as <task>_EMA (MODEL_EMA.EVAL both)")
    results = run("")
    with ema.swapped_in(model):
        averaged = run("_EMA")
    for name, tasks in averaged.items():
        results.setdefault(name, {}).update(tasks)
    return results
