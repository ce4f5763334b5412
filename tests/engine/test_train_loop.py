"""detgn/engine/train_loop.py: the loop, its hooks, Inf/NaN stops, Ctrl-C, the model's statistics."""

import pytest
import torch
from torch import nn

from detgn.checkpoint import DetectionCheckpointer
from detgn.engine import PeriodicCheckpointer, SimpleTrainer
from tests.util import endless


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
    return endless(lambda: [torch.randn(1, 3, 8, 8)])


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
