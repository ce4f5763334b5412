"""Runs fail loudly and keep what they had: divergence, Ctrl-C, errors while stopping, metrics/checkpoint order."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from detgn.engine.hooks import PeriodicCheckpointer
from detgn.engine.train_loop import HookBase, SimpleTrainer
from detgn.utils.events import JSONWriter, get_event_storage

from .util import QUICK, REPO, TRAIN_NET, run_train_net
from tests.util import endless


class _Toy(nn.Module):
    def __init__(self, scale=1.0):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.scale = scale

    def forward(self, x):
        return {"loss_toy": (self.lin(x) * self.scale).pow(2).mean()}


def _loader():
    return endless(lambda: torch.ones(4, 3))


def test_non_finite_loss_or_gradient_stops_before_a_checkpoint(tmp_path):
    """The step does not wait for the device: the check runs at the flush before every checkpoint (and every
    LOG_PERIOD iterations). A run that went non-finite stops there, naming the loss or the parameter, and its
    checkpoints stay finite."""
    from detgn.checkpoint import DetectionCheckpointer

    model = _Toy(scale=1e30)  # (1e30)^2 overflows: an Inf loss at iteration 0
    trainer = SimpleTrainer(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(
        FloatingPointError, match=r"Loss became infinite or NaN at iteration 0: non-finite \['loss_toy'\]"
    ):
        trainer.train(0, 3)

    model = _Toy()
    calls = []

    def inf_from_iteration_3(grad):
        calls.append(1)
        return grad * float("inf") if len(calls) > 3 else grad

    model.lin.weight.register_hook(inf_from_iteration_3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SimpleTrainer(model, _loader(), opt, flush_period=100)
    trainer.register_hooks(
        [PeriodicCheckpointer(DetectionCheckpointer(model, str(tmp_path), optimizer=opt), period=2, max_iter=50)]
    )
    with pytest.raises(FloatingPointError, match=r"Non-finite value of parameter lin.weight after iteration 3"):
        trainer.train(0, 50)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth" and not (
        tmp_path / "model_0000003.pth"
    ).exists()
    saved = torch.load(tmp_path / "model_0000001.pth", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_overflowing_step_is_named():
    model = _Toy()
    trainer = SimpleTrainer(model, _loader(), torch.optim.SGD(model.parameters(), lr=1e38))
    with pytest.raises(
        FloatingPointError, match=r"(Non-finite value of parameter lin\.\w+|Loss became infinite or NaN) .*iteration \d"
    ):
        trainer.train(0, 5)


def test_the_step_leaves_the_losses_on_the_device_until_a_flush():
    """No host synchronisation per step: losses are copied to the host once per flush_period iterations, with
    every iteration's row still in the storage afterwards."""
    model = _Toy()
    trainer = SimpleTrainer(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.01), flush_period=4)
    flushed = []
    real = trainer.runner.flush  # the step runner flushes by itself; the hooks call trainer.flush()
    trainer.runner.flush = lambda: (flushed.append(trainer.iter), real())[1]
    trainer.train(0, 10)
    assert flushed == [0, 3, 7, 9]  # the first iteration, every 4th, the last
    assert [it for _, it in trainer.storage.history("loss_toy")] == list(range(10))


def test_first_error_is_the_one_raised():
    class _Boom(HookBase):
        def after_train(self):
            raise ValueError("cannot convert float NaN to integer")  # what used to hide the real error

    class _Fail(SimpleTrainer):
        def run_step(self):
            raise RuntimeError("Invalid RLE mask representation in image 7")

    model = _Toy()
    trainer = _Fail(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([_Boom()])
    with pytest.raises(RuntimeError, match="Invalid RLE"):
        trainer.train(0, 2)


class _FakeCheckpointer:
    def __init__(self, save_dir, json_file):
        self.save_dir, self.json_file, self.rows_at_save = save_dir, json_file, {}

    def save(self, name, iteration, **kw):
        rows = [json.loads(x)["iteration"] for x in open(self.json_file)] if os.path.exists(self.json_file) else []
        self.rows_at_save[iteration] = rows
        open(os.path.join(self.save_dir, name + ".pth"), "w").write("x")


class _Metrics(SimpleTrainer):
    def run_step(self):
        get_event_storage().put_scalar("total_loss", 1.0)


def test_metrics_row_is_on_disk_before_its_checkpoint(tmp_path):
    json_file = str(tmp_path / "metrics.json")
    writer = JSONWriter(json_file)
    ck = _FakeCheckpointer(str(tmp_path), json_file)
    model = _Toy()
    trainer = _Metrics(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([PeriodicCheckpointer(ck, period=2, max_iter=6, before_save=writer.write)])
    trainer.train(0, 6)
    assert ck.rows_at_save[1] == [0, 1] and ck.rows_at_save[3] == [0, 1, 2, 3] and ck.rows_at_save[5] == list(range(6))


def test_max_to_keep_counts_the_files_of_an_earlier_run(tmp_path):
    for it in (1, 3, 5, 7):  # left by an interrupted run
        open(tmp_path / f"model_{it:07d}.pth", "w").write("x")
    ck = _FakeCheckpointer(str(tmp_path), str(tmp_path / "metrics.json"))
    model = _Toy()
    trainer = _Metrics(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([PeriodicCheckpointer(ck, period=2, max_iter=13, max_to_keep=2)])
    trainer.train(8, 13)  # resumed at 8: saves 9, 11, then model_final
    assert sorted(os.listdir(tmp_path)) == ["model_0000009.pth", "model_0000011.pth", "model_final.pth"]


COMMON = ["DATASETS.TEST", "()", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1"]


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_diverging_run_names_the_problem_and_keeps_finite_checkpoints(tmp_path):
    r = run_train_net(
        ["--config-file", QUICK, "OUTPUT_DIR", str(tmp_path), "SOLVER.BASE_LR", "1e30", "SOLVER.MAX_ITER", "20"]
        + COMMON
    )
    assert r.returncode == 3, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: ") and ("Non-finite" in last or "Loss became infinite" in last) and "iteration" in last
    )
    assert "Last checkpoint" in last or "No checkpoint was saved" in last
    for name in os.listdir(tmp_path):
        if name.endswith(".pth"):
            sd = torch.load(tmp_path / name, weights_only=True)["model"]
            assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()), name


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_ctrl_c_is_a_clean_stop(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    # a shell's background job (as CI may run us) starts with SIGINT ignored; give the child the
    # disposition a terminal user's process has, so that Ctrl-C raises KeyboardInterrupt there
    proc = subprocess.Popen(
        [
            sys.executable,
            TRAIN_NET,
            "--config-file",
            QUICK,
            "OUTPUT_DIR",
            str(tmp_path),
            "SOLVER.MAX_ITER",
            "1000",
            "SOLVER.MAX_TO_KEEP",
            "2",
        ]
        + COMMON,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not (tmp_path / "last_checkpoint").exists():
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # never leave a 1000-iteration training behind
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted. Last checkpoint: ") and "--resume" in last and str(tmp_path) in last


def test_ctrl_c_inside_a_step_stops_after_that_step():
    """SIGINT arriving in the middle of run_step (e.g. inside a C extension) lets the step and its hooks
    finish, then stops the loop with KeyboardInterrupt; the handler is restored afterwards."""
    from detgn.engine.train_loop import TrainerBase

    class Trainer(TrainerBase):
        def __init__(self):
            super().__init__()
            self.finished_steps = []

        def run_step(self):
            if self.iter == 2:
                os.kill(os.getpid(), signal.SIGINT)  # delivered now, in the middle of the step
            self.finished_steps.append(self.iter)

    class After(HookBase):
        def __init__(self):
            self.seen = []

        def after_step(self):
            self.seen.append(self.trainer.iter)

    t, hook = Trainer(), After()
    t.register_hooks([hook])
    # Python's own handler, whatever the suite inherited (a shell's background job starts with SIGINT ignored)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            t.train(0, 10)
        assert t.finished_steps == [0, 1, 2] and hook.seen == [0, 1, 2] and t.interrupted
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
