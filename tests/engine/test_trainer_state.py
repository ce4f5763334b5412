"""detgn/engine/defaults.py + train_loop.py: DefaultTrainer is the TrainerBase its hooks see, and the hooks'
state travels in every checkpoint and comes back on resume."""

import logging

import torch

from detgn.config import get_cfg
from detgn.engine import DefaultTrainer
from detgn.engine.train_loop import HookBase, SimpleTrainer, TrainerBase

from .util import QUICK, SMALL_MODEL


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
