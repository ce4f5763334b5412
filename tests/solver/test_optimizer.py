"""detgn/solver/optimizer.py: SGD or AdamW over parameter groups (backbone, norm, bias, embedding multipliers), the
groups logged once, the keys refused at read time, and an AdamW run that resumes exactly."""

import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from detgn.config import get_cfg
from detgn.config.rules import check_config
from detgn.engine import DefaultTrainer, seed_all_rng
from detgn.modeling import build_model
from detgn.solver import build_optimizer, describe_param_groups, get_default_optimizer_params
from tests.engine.util import QUICK, small_train_cfg
from tests.util import TINY_MODEL


def _model_cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(TINY_MODEL + ["MODEL.DEVICE", "cpu", *opts])
    return cfg


def _lr_and_decay_by_name(optimizer):
    return {n: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for n in g["param_names"]}


def test_the_backbone_multiplier_changes_only_the_backbones_lr_and_decay():
    torch.manual_seed(0)
    model = build_model(_model_cfg())
    plain = _lr_and_decay_by_name(build_optimizer(_model_cfg(), model))
    scaled_cfg = _model_cfg("SOLVER.BACKBONE_LR_FACTOR", "0.1", "SOLVER.BACKBONE_WEIGHT_DECAY_FACTOR", "0.5")
    scaled = _lr_and_decay_by_name(build_optimizer(scaled_cfg, model))
    assert plain.keys() == scaled.keys() and len(plain) == sum(1 for p in model.parameters() if p.requires_grad)
    bottom_up = [n for n in plain if n.startswith("backbone.bottom_up.")]
    assert bottom_up and any(n.startswith("backbone.fpn_") for n in plain)
    for name, (lr, wd) in plain.items():
        if name in bottom_up:
            assert scaled[name] == pytest.approx((lr * 0.1, wd * 0.5)), name
        else:  # the FPN, RPN and ROI heads keep theirs
            assert scaled[name] == (lr, wd), name
    # norm layers keep WEIGHT_DECAY_NORM (0), biases get BIAS_LR_FACTOR
    norm = next(n for n in bottom_up if n.endswith(".norm.weight"))
    assert plain[norm][1] == 0.0 and scaled[norm][1] == 0.0


def test_adamw_with_its_keys_and_an_embedding_group():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.OPTIMIZER", "AdamW", "SOLVER.ADAMW.BETAS", "(0.9, 0.95)", "SOLVER.ADAMW.EPS", "1e-6"])
    cfg.merge_from_list(["SOLVER.WEIGHT_DECAY", "0.05", "SOLVER.WEIGHT_DECAY_EMBED", "0.01"])
    check_config(cfg)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.GroupNorm(2, 4))
    opt = build_optimizer(cfg, model)
    assert type(opt) is torch.optim.AdamW
    assert all(g["betas"] == (0.9, 0.95) and g["eps"] == 1e-6 for g in opt.param_groups)
    decay = {n: wd for n, (_, wd) in _lr_and_decay_by_name(opt).items()}
    assert decay == {"0.weight": 0.01, "1.weight": 0.05, "1.bias": 0.05, "2.weight": 0.0, "2.bias": 0.0}
    text = describe_param_groups(opt)
    assert text.startswith("Optimizer AdamW, parameter groups:")
    assert "embedding: 1 tensors, 40 parameters" in text and "norm: 2 tensors, 8 parameters" in text
    # the same groups with clipping
    cfg.merge_from_list(["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model"])
    clipped = build_optimizer(cfg, model)
    assert isinstance(clipped, torch.optim.AdamW) and type(clipped) is not torch.optim.AdamW
    params = get_default_optimizer_params(model, 0.1, 0.05, 0.0, weight_decay_embed=0.01)
    assert sorted(r for g in params for r in g["roles"]) == ["bias", "embedding", "norm", "weight"]


@pytest.mark.parametrize(
    "opts, message",
    [
        (["SOLVER.OPTIMIZER", "Adam"], "SOLVER.OPTIMIZER = 'Adam': must be one of 'SGD', 'AdamW'"),
        (["SOLVER.OPTIMIZER", "AdamW", "SOLVER.MOMENTUM", "0.8"], "SOLVER.MOMENTUM = 0.8: must be its default 0.9"),
        (["SOLVER.ADAMW.EPS", "1e-6"], "SOLVER.ADAMW.EPS = 1e-06: must be its default 1e-08 with SOLVER.OPTIMIZER SGD"),
        (["SOLVER.OPTIMIZER", "AdamW", "SOLVER.ADAMW.BETAS", "(0.9, 1.0)"], "SOLVER.ADAMW.BETAS"),
        (["SOLVER.BACKBONE_LR_FACTOR", "-1.0"], "SOLVER.BACKBONE_LR_FACTOR = -1.0: must be a number >= 0"),
        (["SOLVER.WEIGHT_DECAY_EMBED", "-0.1"], "SOLVER.WEIGHT_DECAY_EMBED"),
    ],
)
def test_the_new_keys_are_refused_when_read(opts, message):
    from detgn.jobs import ConfigError, setup_cfg

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        setup_cfg(SimpleNamespace(config_file=QUICK, opts=opts))


def _train_cfg(out, max_iter, *opts):
    return small_train_cfg(out, max_iter, "SOLVER.BASE_LR", "0.0005", *opts)


def _train(cfg, resume=False):
    seed_all_rng(0)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def test_an_adamw_run_resumes_exactly_and_refuses_an_sgd_checkpoint(tmp_path, caplog):
    adamw = ["SOLVER.OPTIMIZER", "AdamW", "SOLVER.WEIGHT_DECAY", "0.05", "SOLVER.BACKBONE_LR_FACTOR", "0.5"]
    with caplog.at_level(logging.INFO, logger="detgn.trainer"):
        straight = _train(_train_cfg(tmp_path / "straight", 3, *adamw))
    assert "Optimizer AdamW, parameter groups:" in caplog.text and "backbone norm" in caplog.text
    _train(_train_cfg(tmp_path / "resumed", 2, *adamw))
    resumed = _train(_train_cfg(tmp_path / "resumed", 3, *adamw), resume=True)
    assert resumed.start_iter == 2
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)

    _train(_train_cfg(tmp_path / "sgd", 1))
    with pytest.raises(Exception, match="holds SGD's optimizer state but SOLVER.OPTIMIZER is AdamW"):
        DefaultTrainer(_train_cfg(tmp_path / "sgd", 2, *adamw)).resume_or_load(resume=True)
