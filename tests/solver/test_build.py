"""detgn/solver/build.py: weight-decay groups, LR schedules as detectron2's, reference world size."""

import math

import pytest
import torch
from torch import nn

from detgn.config import get_cfg
from detgn.modeling import build_model
from detgn.solver import build_lr_scheduler, build_optimizer, rescale_for_world_size

from tests.engine.util import QUICK


def test_gn_parameters_get_no_weight_decay():
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    wd_of = {}
    for g in opt.param_groups:
        for p in g["params"]:
            wd_of[p] = g["weight_decay"]
    gn_params = [
        p
        for m in model.modules()
        if isinstance(m, nn.GroupNorm)
        for p in m.parameters(recurse=False)
        if p.requires_grad
    ]
    assert len(gn_params) > 50
    assert all(wd_of[p] == 0.0 for p in gn_params)
    conv = model.backbone.bottom_up.res3[0].conv1.weight
    assert wd_of[conv] == cfg.SOLVER.WEIGHT_DECAY
    # frozen parameters (stem, res2) are not in the optimizer
    assert model.backbone.bottom_up.stem.conv1.weight not in wd_of
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.5
    opt2 = build_optimizer(cfg, model)
    wd2 = {p: g["weight_decay"] for g in opt2.param_groups for p in g["params"]}
    assert all(wd2[p] == 0.5 for p in gn_params)


def _closed_form_lr(it, s):
    """The schedule as a formula: what detgn computed before it used fvcore's param schedulers, except
    the cosine warm-up, which now ramps linearly to the cosine's value at the end of the warm-up as
    detectron2's WarmupParamScheduler does (detgn used to multiply the ramp by the cosine)."""
    if s.LR_SCHEDULER_NAME == "WarmupCosineLR" and it < s.WARMUP_ITERS and s.WARMUP_METHOD == "linear":
        end = s.BASE_LR_END / s.BASE_LR
        at_end = end + (1 - end) * 0.5 * (1 + math.cos(math.pi * s.WARMUP_ITERS / s.MAX_ITER))
        alpha = it / s.WARMUP_ITERS
        return s.BASE_LR * (s.WARMUP_FACTOR + (at_end - s.WARMUP_FACTOR) * alpha)
    if it < s.WARMUP_ITERS:
        alpha = it / s.WARMUP_ITERS
        warm = s.WARMUP_FACTOR if s.WARMUP_METHOD == "constant" else s.WARMUP_FACTOR * (1 - alpha) + alpha
    else:
        warm = 1.0
    if s.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        return s.BASE_LR * warm * s.GAMMA ** sum(1 for m in s.STEPS if m <= it)
    end = s.BASE_LR_END / s.BASE_LR
    return s.BASE_LR * warm * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(it, s.MAX_ITER) / s.MAX_ITER)))


@pytest.mark.parametrize(
    "name,steps,warmup,method,max_iter",
    [
        ("WarmupMultiStepLR", (300, 450), 100, "linear", 500),
        ("WarmupMultiStepLR", (250,), 50, "linear", 300),  # the quick start
        ("WarmupMultiStepLR", (60000, 80000), 1000, "linear", 90000),
        ("WarmupMultiStepLR", (5, 8), 4, "constant", 10),
        ("WarmupCosineLR", (), 100, "linear", 500),
        ("WarmupMultiStepLR", (40,), 0, "linear", 60),
    ],
)
def test_lr_schedules_follow_detectron2(name, steps, warmup, method, max_iter):
    cfg = get_cfg()
    s = cfg.SOLVER
    s.LR_SCHEDULER_NAME, s.STEPS, s.WARMUP_ITERS, s.WARMUP_METHOD, s.MAX_ITER = name, steps, warmup, method, max_iter
    s.BASE_LR, s.WARMUP_FACTOR, s.GAMMA, s.BASE_LR_END = 0.02, 0.001, 0.1, 0.0002
    p = [nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(p, lr=s.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    check = sorted(
        {
            0,
            1,
            max_iter - 1,
            *[m + d for m in (warmup, *steps) for d in (-1, 0, 1) if 0 <= m + d < max_iter],
            *range(0, max_iter, max(1, max_iter // 50)),
        }
    )
    got = {}
    for it in range(max_iter):
        if it in check:
            got[it] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        if it > 2000 and it > max(check):
            break
    for it in check:
        assert got[it] == pytest.approx(_closed_form_lr(it, s), rel=1e-9, abs=1e-15), it


def test_lr_schedule_refuses_bad_values():
    """The schedule's keys are checked by the rules (setup_cfg, build_model), not again by the builder."""
    from detgn.config.rules import check_config

    cfg = get_cfg()
    cfg.SOLVER.STEPS = (200, 100)
    with pytest.raises(ValueError, match=r"SOLVER.STEPS = \(200, 100\): must be increasing iterations"):
        check_config(cfg)
    cfg.SOLVER.STEPS = (100,)
    cfg.SOLVER.WARMUP_METHOD = "cosine"
    with pytest.raises(ValueError, match="SOLVER.WARMUP_METHOD = 'cosine': must be one of 'linear', 'constant'"):
        check_config(cfg)


def test_reference_world_size_rescaling():
    cfg = get_cfg()
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
    cfg.SOLVER.IMS_PER_BATCH = 16
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.MAX_ITER = 90000
    cfg.SOLVER.STEPS = (60000, 80000)
    out = rescale_for_world_size(cfg, 1)
    assert out.SOLVER.IMS_PER_BATCH == 2 and out.SOLVER.BASE_LR == pytest.approx(0.0025)
    assert out.SOLVER.MAX_ITER == 720000 and out.SOLVER.STEPS == (480000, 640000)
    assert rescale_for_world_size(cfg, 8) is cfg
