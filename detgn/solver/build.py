"""LR schedules (warm-up + multi-step or cosine, as detectron2) and the reference-world-size rescaling. The
optimizer and its parameter groups: optimizer.py."""

import logging

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)

from detgn.utils.errors import ConfigValueError

__all__ = ["build_lr_scheduler", "LRMultiplier", "rescale_for_world_size"]

logger = logging.getLogger(__name__)


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
