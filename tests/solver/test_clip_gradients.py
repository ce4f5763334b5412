"""SOLVER.CLIP_GRADIENTS follows detectron2: "norm" per parameter, "full_model" jointly, "value" per element."""

import pytest
import torch

from detgn.config import get_cfg
from detgn.solver import build_optimizer


def _model_with_grads():
    m = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        m[0].weight.fill_(0.0)
        m[1].weight.fill_(0.0)
    m[0].weight.grad = torch.full((4, 4), 3.0)  # norm 12
    m[1].weight.grad = torch.full((1, 4), 0.25)  # norm 0.5
    return m


def _step(clip_type, value=1.0):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM = 1.0, 0.0, 0.0, 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = value
    m = _model_with_grads()
    build_optimizer(cfg, m).step()
    return -m[0].weight.detach(), -m[1].weight.detach()  # lr 1, weights were 0: the update is the clipped gradient


def test_norm_clips_each_parameter_separately():
    g0, g1 = _step("norm")
    assert g0.norm().item() == pytest.approx(1.0, rel=1e-5)  # 12 -> 1
    assert torch.allclose(g1, torch.full((1, 4), 0.25))  # 0.5 < 1: untouched


def test_full_model_clips_the_joint_norm():
    g0, g1 = _step("full_model")
    total = (g0.norm() ** 2 + g1.norm() ** 2).sqrt().item()
    assert total == pytest.approx(1.0, rel=1e-5)
    assert (g0[0, 0] / g1[0, 0]).item() == pytest.approx(12.0, rel=1e-5)  # one common factor keeps the ratio


def test_value_clamps_elements():
    g0, g1 = _step("value", value=0.5)
    assert torch.allclose(g0, torch.full((4, 4), 0.5)) and torch.allclose(g1, torch.full((1, 4), 0.25))


def test_unknown_clip_type_is_refused_when_built():
    with pytest.raises(ValueError, match="CLIP_TYPE must be"):
        _step("l2")
