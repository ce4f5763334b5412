"""detgn/engine/trainer.py, resume.py and setup.py (and the TrainerBase state they build on): DefaultTrainer is the trainer its hooks see,
their state travels in every checkpoint and comes back on resume; solver values on resume; its evaluation entry point."""

import pytest
import torch
from torch import nn

from detgn.utils.events import EventWriter, get_event_storage
from detgn.config import get_cfg
from detgn.engine import SimpleTrainer
from detgn.modeling import build_model
from detgn.solver import build_lr_scheduler, build_optimizer

import logging

from detgn.engine import DefaultTrainer
from detgn.engine.train_loop import HookBase, TrainerBase
from tests.engine.util import QUICK, SMALL_MODEL


def test_resume_applies_changed_solver_values_with_a_warning(caplog):
    """torch restores LR/momentum/weight decay from the checkpoint; on --resume the config's values win, warned."""
    import logging

    from detgn.engine.resume import (
        optimizer_settings as _optimizer_settings,
        reapply_solver_settings as _reapply_solver_settings,
    )

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
    assert DefaultTrainer.test(cfg, model, evaluators=[Recorder()]) == {name: {"recorded": {"images": 2}}}
    with pytest.raises(ValueError, match="2 evaluator.* for 1 test dataset"):
        DefaultTrainer.test(cfg, model, evaluators=[Recorder(), Recorder()])


class StepCounter(HookBase):
    """A hook with state: how many steps it has seen over every run of the same training."""

    def __init__(self):
        self.steps = 0
        self.loaded = None

    def after_step(self):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.loaded = dict(state)
        self.steps = state["steps"]


def _cfg(out, max_iter):
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(
        SMALL_MODEL
        + ["OUTPUT_DIR", str(out), "DATASETS.TEST", "()", "SOLVER.MAX_ITER", str(max_iter)]
        + ["SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.STEPS", "(10,)", "SOLVER.WARMUP_ITERS", "0"]
        + ["INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "160"]
    )
    return cfg


def test_default_trainer_is_the_trainer_its_hooks_see_and_resumes_their_state(tmp_path, caplog):
    first = DefaultTrainer(_cfg(tmp_path, 2))
    assert isinstance(first, TrainerBase)
    counter = StepCounter()
    first.register_hooks([counter])
    first.resume_or_load(resume=False)
    first.train()
    assert counter.trainer.iter == first.iter == 2  # the hook's trainer is the DefaultTrainer itself
    kinds = [type(h).__name__ for h in first.hooks]  # registered hooks run before the checkpointer and writers
    assert kinds.index("StepCounter") == kinds.index("PeriodicCheckpointer") - 1
    assert counter.steps == 2 and counter.loaded is None

    saved = torch.load(tmp_path / "model_0000000.pth", weights_only=True)["trainer"]
    assert saved["iteration"] == 0 and saved["hooks"] == {"StepCounter": {"steps": 1}}
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)["trainer"]
    assert final["hooks"] == {"StepCounter": {"steps": 2}}

    second = DefaultTrainer(_cfg(tmp_path, 3))
    resumed = StepCounter()
    fresh = StepCounter()  # a second hook of the class: named StepCounter#2, absent from the checkpoint
    second.register_hooks([resumed, fresh])
    second.resume_or_load(resume=True)
    assert second.start_iter == 2
    with caplog.at_level(logging.WARNING, logger="detgn.engine.train_loop"):
        second.train()
    assert resumed.loaded == {"steps": 2} and resumed.steps == 3
    assert fresh.loaded is None and fresh.steps == 1
    assert "no state for hook StepCounter#2" in caplog.text
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["trainer"]["hooks"] == {
        "StepCounter": {"steps": 3},
        "StepCounter#2": {"steps": 1},
    }


def test_a_saved_state_no_hook_takes_is_reported(caplog):
    model = torch.nn.Linear(2, 1)
    trainer = SimpleTrainer(model, iter(()), torch.optim.SGD(model.parameters(), lr=0.1))
    counter = StepCounter()
    trainer.register_hooks([counter])
    with caplog.at_level(logging.WARNING, logger="detgn.engine.train_loop"):
        trainer.load_state_dict({"hooks": {"StepCounter": {"steps": 5}, "BestCheckpointer": {"best": 1.0}}})
    assert counter.steps == 5
    assert "state for hook BestCheckpointer, which this run does not have" in caplog.text
    assert trainer.state_dict() == {"iteration": 0, "hooks": {"StepCounter": {"steps": 5}}}


class RecordingWriter(EventWriter):
    """A logger backend of the kind a user adds: what it was given, and that it was closed."""

    def __init__(self):
        self.rows = []
        self.closed = False

    def write(self):
        storage = get_event_storage()
        self.rows.append((storage.iter, {k: v for k, (v, _) in storage.latest().items() if "loss" in k}))

    def close(self):
        self.closed = True


def test_a_writer_added_through_build_writers(tmp_path):
    mine = RecordingWriter()

    class MyTrainer(DefaultTrainer):
        def build_writers(self):
            return super().build_writers() + [mine]

    cfg = _cfg(tmp_path, 2)
    cfg.LOG_PERIOD = 1
    trainer = MyTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert [it for it, _ in mine.rows][:2] == [0, 1] and mine.closed
    assert all("total_loss" in row for _, row in mine.rows)
    writers = next(h for h in trainer.hooks if type(h).__name__ == "PeriodicWriter")._writers
    assert [type(w).__name__ for w in writers] == [
        "CommonMetricPrinter",
        "JSONWriter",
        "TensorboardWriter",
        "RecordingWriter",
    ]
    assert [w.console for w in writers] == [True, False, False, False]
    assert [w.before_checkpoint for w in writers] == [False, True, False, False]


def test_num_classes_must_match_the_training_data(tmp_path):
    from detgn.utils.errors import ConfigValueError

    cfg = _cfg(tmp_path, 1)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    with pytest.raises(
        ConfigValueError, match=r"NUM_CLASSES is 3 but nuclei_mini_train has 1 categories \(nucleus\); set"
    ):
        DefaultTrainer(cfg)
