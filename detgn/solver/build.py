"""Optimizer (SGD with per-parameter weight decay / LR groups), gradient clipping and LR schedules."""

import logging
from typing import Any, Dict, List, Optional

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)

from detgn.layers import is_norm_module
from detgn.utils.errors import ConfigValueError

__all__ = [
    "get_default_optimizer_params",
    "build_optimizer",
    "build_lr_scheduler",
    "LRMultiplier",
    "rescale_for_world_size",
    "clip_gradients",
]

logger = logging.getLogger(__name__)


def get_default_optimizer_params(
    model: torch.nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: Optional[float] = None,
) -> List[Dict[str, Any]]:
    """One param group per trainable parameter with its lr and weight_decay.

    Parameters of norm layers (GN, BN, LN, ...) get `weight_decay_norm` (0 by default: the GN
    paper finds decaying GN's gamma/beta hurts detection); biases get lr * bias_lr_factor and
    `weight_decay_bias` (default: weight_decay).
    """
    if weight_decay_bias is None:
        weight_decay_bias = weight_decay
    params, seen = [], set()
    for module_name, module in model.named_modules():
        for name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in seen:
                continue
            seen.add(value)
            hp = {"lr": base_lr, "weight_decay": weight_decay}
            if is_norm_module(module):
                hp["weight_decay"] = weight_decay_norm
            elif name == "bias":
                hp["lr"] = base_lr * bias_lr_factor
                hp["weight_decay"] = weight_decay_bias
            params.append({"params": [value], "name": f"{module_name}.{name}" if module_name else name, **hp})
    return _merge_groups(params)


def _merge_groups(groups):
    """Merge groups with identical hyper-parameters (fewer groups -> faster optimizer step)."""
    merged: Dict[tuple, Dict] = {}
    for g in groups:
        key = tuple(sorted((k, v) for k, v in g.items() if k not in ("params", "name")))
        if key not in merged:
            merged[key] = {k: v for k, v in g.items() if k != "name"}
            merged[key]["params"] = []
            merged[key]["param_names"] = []
        merged[key]["params"].extend(g["params"])
        merged[key]["param_names"].append(g["name"])
    return list(merged.values())


def clip_gradients(params, clip_type: str, clip_value: float, norm_type: float = 2.0) -> None:
    """detectron2's SOLVER.CLIP_GRADIENTS semantics: "value" clamps every gradient element to
    [-clip_value, clip_value]; "norm" rescales each parameter's gradient separately so that its
    norm is at most clip_value; "full_model" rescales all gradients jointly (one global norm)."""
    if clip_type == "value":
        torch.nn.utils.clip_grad_value_(params, clip_value)
    elif clip_type == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_(p, clip_value, norm_type)
    elif clip_type == "full_model":
        torch.nn.utils.clip_grad_norm_(params, clip_value, norm_type)
    else:
        raise ConfigValueError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'value', 'norm' or 'full_model', got '{clip_type}'"
        )


class _ClippingSGD(torch.optim.SGD):
    """SGD that clips the gradients of all its parameters before each step."""

    def __init__(self, params, *, clip_type: str, clip_value: float, norm_type: float, **kwargs):
        """clip_type, clip_value, norm_type: SOLVER.CLIP_GRADIENTS.CLIP_TYPE / CLIP_VALUE / NORM_TYPE (clip_gradients)."""
        if clip_type not in ("value", "norm", "full_model"):
            raise ConfigValueError(
                f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'value', 'norm' or 'full_model', got '{clip_type}'"
            )
        super().__init__(params, **kwargs)
        self._clip = (clip_type, clip_value, norm_type)

    @torch.no_grad()
    def step(self, closure=None):
        all_params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        clip_gradients(all_params, *self._clip)
        return super().step(closure)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum from SOLVER.*; optional gradient clipping."""
    params = get_default_optimizer_params(
        model,
        cfg.SOLVER.BASE_LR,
        cfg.SOLVER.WEIGHT_DECAY,
        cfg.SOLVER.WEIGHT_DECAY_NORM,
        cfg.SOLVER.BIAS_LR_FACTOR,
        cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    kwargs = dict(
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )
    clip = cfg.SOLVER.CLIP_GRADIENTS
    # SOLVER.OPTIMIZER -> (without clipping, with clipping); the rules accept the names listed here only
    plain, clipping = {"SGD": (torch.optim.SGD, _ClippingSGD)}[cfg.SOLVER.OPTIMIZER]
    if clip.ENABLED:
        return clipping(
            params, clip_type=clip.CLIP_TYPE, clip_value=clip.CLIP_VALUE, norm_type=clip.NORM_TYPE, **kwargs
        )
    return plain(params, **kwargs)


def _with_warmup(scheduler: ParamScheduler, factor: float, length: float, method: str) -> ParamScheduler:
    """Warm-up in front of `scheduler` over the first `length` of training (a fraction): "linear"
    goes from factor * scheduler(0) to scheduler(length), "constant" stays at factor * scheduler(0)."""
    if method not in ("linear", "constant"):
        raise ConfigValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got '{method}'")
    if length <= 0:
        return scheduler
    start = factor * scheduler(0.0)
    warmup = ConstantParamScheduler(start) if method == "constant" else LinearParamScheduler(start, scheduler(length))
    return CompositeParamScheduler(
        [warmup, scheduler], lengths=[length, 1.0 - length], interval_scaling=["rescaled", "fixed"]
    )


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """lr of each param group = its base lr x multiplier(iteration / max_iter), for an fvcore ParamScheduler."""

    def __init__(self, optimizer, multiplier: ParamScheduler, max_iter: int, last_epoch: int = -1):
        if not isinstance(multiplier, ParamScheduler):
            raise ValueError(f"LRMultiplier needs an fvcore ParamScheduler, got {type(multiplier).__name__}")
        self._multiplier = multiplier
        self._max_iter = max(int(max_iter), 1)
        super().__init__(optimizer, last_epoch)

    def state_dict(self):
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}  # the schedule itself comes from the config

    def get_lr(self):
        m = self._multiplier(min(self.last_epoch / self._max_iter, 1.0))
        return [base * m for base in self.base_lrs]


def build_lr_scheduler(cfg, optimizer):
    """SOLVER.LR_SCHEDULER_NAME as fvcore param schedulers behind a warm-up, as detectron2 builds it:
    WarmupMultiStepLR: base_lr x warmup x GAMMA ** (milestones passed); WarmupCosineLR: base_lr x
    warmup x cosine from 1 to BASE_LR_END / BASE_LR over MAX_ITER."""
    s = cfg.SOLVER
    name = s.LR_SCHEDULER_NAME
    steps = [x for x in s.STEPS if x < s.MAX_ITER]  # a step at MAX_ITER or later would never be reached
    if len(steps) != len(s.STEPS):
        logger.warning(
            "SOLVER.STEPS %s contains values not smaller than SOLVER.MAX_ITER %d; they are ignored", s.STEPS, s.MAX_ITER
        )
    # the name, increasing STEPS and the warm-up method are checked by config/rules.py (setup_cfg, build_model)
    if name == "WarmupCosineLR":
        sched = CosineParamScheduler(1.0, s.BASE_LR_END / s.BASE_LR)
    else:  # WarmupMultiStepLR
        sched = MultiStepParamScheduler(
            values=[s.GAMMA**k for k in range(len(steps) + 1)], milestones=steps, num_updates=s.MAX_ITER
        )
    warmup_length = min(s.WARMUP_ITERS / max(s.MAX_ITER, 1), 1.0)
    return LRMultiplier(optimizer, _with_warmup(sched, s.WARMUP_FACTOR, warmup_length, s.WARMUP_METHOD), s.MAX_ITER)


def rescale_for_world_size(cfg, num_workers: int):
    """Linear scaling rule: when SOLVER.REFERENCE_WORLD_SIZE > 0 and differs from `num_workers`,
    scale IMS_PER_BATCH and BASE_LR by num_workers / reference and divide MAX_ITER, STEPS,
    WARMUP_ITERS, CHECKPOINT_PERIOD and TEST.EVAL_PERIOD by it. Returns a new config."""
    old = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if old == 0 or old == num_workers:
        return cfg
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    if cfg.SOLVER.IMS_PER_BATCH % old != 0:
        raise ConfigValueError(
            f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by REFERENCE_WORLD_SIZE {old}"
        )
    scale = num_workers / old
    bs = cfg.SOLVER.IMS_PER_BATCH = int(round(cfg.SOLVER.IMS_PER_BATCH * scale))
    cfg.SOLVER.BASE_LR *= scale
    cfg.SOLVER.MAX_ITER = int(round(cfg.SOLVER.MAX_ITER / scale))
    cfg.SOLVER.WARMUP_ITERS = int(round(cfg.SOLVER.WARMUP_ITERS / scale))
    cfg.SOLVER.STEPS = tuple(int(round(s / scale)) for s in cfg.SOLVER.STEPS)
    cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
    cfg.SOLVER.CHECKPOINT_PERIOD = int(round(cfg.SOLVER.CHECKPOINT_PERIOD / scale))
    cfg.SOLVER.REFERENCE_WORLD_SIZE = num_workers
    logger.info(
        "Rescaled the schedule for %d workers (reference %d): IMS_PER_BATCH=%d, BASE_LR=%g, MAX_ITER=%d",
        num_workers,
        old,
        bs,
        cfg.SOLVER.BASE_LR,
        cfg.SOLVER.MAX_ITER,
    )
    if frozen:
        cfg.freeze()
    return cfg
