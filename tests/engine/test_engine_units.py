import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from detgn.checkpoint import DetectionCheckpointer
from detgn.config import get_cfg
from detgn.engine import PeriodicCheckpointer, SimpleTrainer
from detgn.modeling import build_model
from detgn.solver import build_lr_scheduler, build_optimizer, rescale_for_world_size

from .util import QUICK, REPO


class _ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gn = nn.GroupNorm(2, 4)
        self.nan_at = None
        self.calls = 0

    def forward(self, data):
        y = self.gn(self.conv(data[0])).mean()
        self.calls += 1
        bad = torch.tensor(float("nan")) if self.nan_at is not None and self.calls > self.nan_at else torch.tensor(0.0)
        return {"loss_good": y**2, "loss_mask": y.abs() + bad}


def _loader():
    while True:
        yield [torch.randn(1, 3, 8, 8)]


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path):
    model = _ToyModel()
    model.nan_at = 3  # iterations 0..2 fine, iteration 3 gives NaN
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = DetectionCheckpointer(model, str(tmp_path), optimizer=opt)
    trainer = SimpleTrainer(model, _loader(), opt)
    trainer.register_hooks([PeriodicCheckpointer(ckpt, period=2, max_iter=10)])
    with pytest.raises(FloatingPointError) as e:
        trainer.train(0, 10)
    msg = str(e.value)
    assert "iteration 3" in msg and "non-finite ['loss_mask']" in msg
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    state = torch.load(tmp_path / "model_0000001.pth", weights_only=True)
    assert state["iteration"] == 1
    assert not (tmp_path / "model_final.pth").exists()
    assert all(torch.isfinite(v).all() for v in state["model"].values())  # the checkpoint never holds the NaN step


def test_interrupted_save_leaves_previous_checkpoint(tmp_path):
    # a child process saves once, then is SIGKILLed in the middle of writing the second checkpoint
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {REPO!r})
        from torch import nn
        from detgn.checkpoint import DetectionCheckpointer
        model = nn.Linear(1000, 1000)
        ck = DetectionCheckpointer(model, {str(tmp_path)!r})
        ck.save("model_0000001", iteration=1)
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04 partial bytes of a zip")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        with torch.no_grad():
            model.weight.add_(1)
        ck.save("model_0000003", iteration=3)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == -9
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000003.pth").exists()
    model = nn.Linear(1000, 1000)
    ck = DetectionCheckpointer(model, str(tmp_path))
    extra = ck.resume_or_load("", resume=True)
    assert extra["iteration"] == 1


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
    cfg = get_cfg()
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg.SOLVER.STEPS = (200, 100)
    with pytest.raises(ValueError, match="SOLVER.STEPS must be increasing"):
        build_lr_scheduler(cfg, opt)
    cfg.SOLVER.STEPS = (100,)
    cfg.SOLVER.WARMUP_METHOD = "cosine"
    with pytest.raises(ValueError, match="WARMUP_METHOD"):
        build_lr_scheduler(cfg, opt)


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


def test_ctrl_c_during_final_evaluation_stops_it():
    """A Ctrl-C request seen by the evaluation after the last iteration stops it (KeyboardInterrupt,
    exit 130 in the CLI) instead of evaluating to the end; the other hooks still close."""
    from detgn.engine.train_loop import HookBase, TrainerBase
    from detgn.evaluation import inference_on_dataset
    from detgn.utils import interrupt

    seen = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, inputs):
            seen.append(len(seen))
            if len(seen) == 2:
                interrupt.request_stop()  # what the SIGINT handler does
            return [{} for _ in inputs]

    class Evaluator:
        def reset(self):
            pass

        def process(self, inputs, outputs):
            pass

        def evaluate(self):
            return {}

    class FinalEval(HookBase):
        def after_train(self):
            inference_on_dataset(Model(), [[{"image_id": i}] for i in range(10)], Evaluator())

    class Closer(HookBase):
        closed = False

        def after_train(self):
            Closer.closed = True

    class T(TrainerBase):
        def run_step(self):
            pass

    t = T()
    t.register_hooks([FinalEval(), Closer()])
    with pytest.raises(KeyboardInterrupt):
        t.train(0, 2)
    assert seen == [0, 1] and t.interrupted and Closer.closed
    assert not interrupt.stop_requested()  # cleared when the loop ends


def test_resume_applies_changed_solver_values_with_a_warning(caplog):
    """torch restores LR/momentum/weight decay from the checkpoint; on --resume the config's values win, warned."""
    import logging

    from detgn.engine.defaults import _optimizer_settings, _reapply_solver_settings

    def build(lr, wd):
        cfg = get_cfg()
        cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = lr, wd, 10, (5,)
        cfg.SOLVER.WARMUP_ITERS = 2
        model = nn.Sequential(nn.Linear(2, 2))
        opt = build_optimizer(cfg, model)
        return opt, build_lr_scheduler(cfg, opt)

    opt, sched = build(0.02, 1e-4)
    for _ in range(3):
        opt.step()
        sched.step()
    state = opt.state_dict(), sched.state_dict()
    for lr, wd, expect_warnings in ((0.02, 1e-4, 0), (0.5, 1e-3, 2)):
        opt2, sched2 = build(lr, wd)
        wanted = _optimizer_settings(opt2), list(sched2.base_lrs)
        opt2.load_state_dict(state[0])
        sched2.load_state_dict(state[1])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            _reapply_solver_settings(opt2, sched2, *wanted, start_iter=3, logger=logging.getLogger("t"))
        assert len([r for r in caplog.records if "--resume:" in r.getMessage()]) == expect_warnings
        assert opt2.param_groups[0]["lr"] == pytest.approx(lr) and opt2.param_groups[0]["weight_decay"] == wd
        if not expect_warnings:  # nothing changed: exactly the checkpoint's state (exact resume)
            assert opt2.param_groups[0]["lr"] == state[0]["param_groups"][0]["lr"]


def test_model_statistics_reach_the_storage_through_put_model_stats():
    """A model reports its own training statistics (the ROI heads' sampling counts); the trainer records them with
    the losses of the same iteration; outside a training storage the call does nothing."""
    from detgn.utils.events import put_model_stats

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            put_model_stats(**{"toy/count": torch.tensor(float(self.calls))})
            return {"loss_toy": self.lin(x).pow(2).mean()}

    def loader():
        while True:
            yield torch.ones(2, 3)

    model = Counting()
    model(torch.ones(1, 3))  # no storage: a no-op, no error
    trainer = SimpleTrainer(model, loader(), torch.optim.SGD(model.parameters(), lr=0.01))
    trainer.train(0, 3)
    assert [(v, it) for v, it in trainer.storage.history("toy/count")] == [(2.0, 0), (3.0, 1), (4.0, 2)]
    assert trainer.storage.pop_model_stats() == {}


def test_default_trainer_test_uses_the_evaluators_it_is_given():
    """As in detectron2: one evaluator per DATASETS.TEST entry replaces build_evaluator; a wrong count is refused."""
    from detgn.data import DatasetCatalog, MetadataCatalog
    from detgn.engine import DefaultTrainer
    from detgn.evaluation import DatasetEvaluator

    from .util import SMALL_MODEL

    name = "nuclei_mini_val_first2_evaluators_test"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get("nuclei_mini_val")[:2])
        MetadataCatalog.get(name).set(thing_classes=["nucleus"], evaluator_type="coco")

    class Recorder(DatasetEvaluator):
        def reset(self):
            self.ids = []

        def process(self, inputs, outputs):
            self.ids += [i["image_id"] for i in inputs]
            assert all("instances" in o for o in outputs)

        def evaluate(self):
            return {"recorded": {"images": len(self.ids)}}

    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(
        SMALL_MODEL
        + [
            "MODEL.DEVICE",
            "cpu",
            "DATASETS.TEST",
            f"('{name}',)",
            "DATALOADER.NUM_WORKERS",
            "0",
            "INPUT.MIN_SIZE_TEST",
            "96",
            "INPUT.MAX_SIZE_TEST",
            "160",
        ]
    )
    model = build_model(cfg).eval()
    assert DefaultTrainer.test(cfg, model, evaluators=[Recorder()]) == {"recorded": {"images": 2}}
    with pytest.raises(ValueError, match="2 evaluator.* for 1 test dataset"):
        DefaultTrainer.test(cfg, model, evaluators=[Recorder(), Recorder()])


def test_trainer_hooks_are_public_and_read_only():
    from detgn.engine.train_loop import HookBase

    a, b = HookBase(), HookBase()
    trainer = SimpleTrainer(_ToyModel(), _loader(), torch.optim.SGD(_ToyModel().parameters(), lr=0.1))
    trainer.register_hooks([a, None, b])
    assert trainer.hooks == (a, b)
    a.trainer.max_iter = 7  # each hook holds a (weak) reference to this trainer
    assert trainer.max_iter == 7
    with pytest.raises(AttributeError):
        trainer.hooks.append(a)
