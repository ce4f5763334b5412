"""Checkpoint-and-stop on SIGTERM/SIGUSR1/SIGUSR2, and what a restarted job does with its OUTPUT_DIR (in process, fast)."""

import importlib
import os
import signal

import pytest

from detgn.config import get_cfg
from detgn.utils import interrupt as preemption
from detgn.jobs.output_dir import config_differences
from detgn.engine.train_loop import HookBase, TrainerBase

from .util import QUICK, REPO


class _CountingTrainer(TrainerBase):
    def __init__(self):
        super().__init__()
        self.steps = []

    def run_step(self):
        self.steps.append(self.iter)


class _Signal(HookBase):
    def __init__(self, at: int, signum: int):
        self.at, self.signum = at, signum

    def after_step(self):
        if self.trainer.iter == self.at:
            os.kill(os.getpid(), self.signum)


class _Saver(HookBase):
    def __init__(self):
        self.saved = []

    def save_for_restart(self):
        self.saved.append(self.trainer.iter)
        return f"model_{self.trainer.iter:07d}.pth"


@pytest.mark.parametrize("signum", preemption.CHECKPOINT_SIGNALS)
def test_signal_stops_after_the_iteration_with_a_checkpoint(signum):
    before = signal.getsignal(signum)
    trainer, saver = _CountingTrainer(), _Saver()
    trainer.register_hooks([_Signal(at=2, signum=signum), saver])
    with pytest.raises(preemption.TrainingPreempted) as e:
        trainer.train(0, 10)
    assert trainer.steps == [0, 1, 2] and saver.saved == [2]
    assert e.value.iteration == 2 and e.value.checkpoint == "model_0000002.pth" and e.value.exit_status == 128 + signum
    assert signal.Signals(signum).name in str(e.value)
    assert signal.getsignal(signum) == before  # the handlers of the caller (submitit's, say) are back
    assert preemption.previous_handler(signum) == before


def test_signal_during_the_last_iteration_skips_the_final_evaluation():
    class _Eval(HookBase):
        ran = False

        def after_train(self):
            self.ran = self.trainer.iter >= self.trainer.max_iter

    trainer, saver, ev = _CountingTrainer(), _Saver(), _Eval()
    trainer.register_hooks([_Signal(at=3, signum=signal.SIGTERM), saver, ev])
    with pytest.raises(preemption.TrainingPreempted):
        trainer.train(0, 4)
    assert saver.saved == [3] and not ev.ran  # a restart resumes at MAX_ITER and evaluates then


def test_config_differences_names_the_keys(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    assert config_differences(str(tmp_path), cfg) is None  # no config.yaml: nothing to compare
    (tmp_path / "config.yaml").write_text(cfg.dump())
    assert config_differences(str(tmp_path), cfg) is None
    other = cfg.clone()
    other.SOLVER.BASE_LR = 0.5
    other.SOLVER.STEPS = (7,)
    d = config_differences(str(tmp_path), other)
    assert "SOLVER.BASE_LR" in d and "0.5" in d and "SOLVER.STEPS" in d
    # tuples of tuples (Cascade's per-stage BBOX_REG_WEIGHTS) come back from config.yaml as lists: still the same run
    nested = cfg.clone()
    nested.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0))
    nested.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.5, 0.6)
    (tmp_path / "config.yaml").write_text(nested.dump())
    assert config_differences(str(tmp_path), nested) is None
    nested.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 11.0))
    assert "BBOX_REG_WEIGHTS" in config_differences(str(tmp_path), nested)


@pytest.fixture
def train_net(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "tools"))
    return importlib.import_module("train_net")


def _launch_recording(calls):
    def launch(main, num_gpus, args=(), **kw):
        calls.append(args[0])

    return launch


def test_auto_resume_continues_the_same_config_and_refuses_another(monkeypatch, capsys, train_net, tmp_path):
    calls = []
    monkeypatch.setattr(train_net, "launch", _launch_recording(calls))
    out = tmp_path / "run"
    out.mkdir()
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.OUTPUT_DIR = str(out)
    (out / "config.yaml").write_text(cfg.dump())
    (out / "model_0000001.pth").write_bytes(b"")
    (out / "last_checkpoint").write_text("model_0000001.pth")
    base = ["--config-file", QUICK, "OUTPUT_DIR", str(out)]
    assert train_net.cli(base) == 2 and "--resume" in capsys.readouterr().err  # without it: refused, as before
    assert train_net.cli(base + ["--auto-resume"]) == 0 and calls[-1].resume
    assert train_net.cli(base + ["--auto-resume", "SOLVER.BASE_LR", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of another config" in err and "SOLVER.BASE_LR" in err and "--resume" in err
    # a machine other than rank 0's refuses the same way (instead of waiting --dist-timeout for a rank 0 that exited)
    assert (
        train_net.cli(
            base
            + [
                "--auto-resume",
                "--num-machines",
                "2",
                "--machine-rank",
                "1",
                "--dist-url",
                "tcp://127.0.0.1:29500",
                "SOLVER.BASE_LR",
                "0.5",
            ]
        )
        == 2
    )
    assert "holds a run of another config" in capsys.readouterr().err
    assert train_net.cli(base + ["--auto-resume", "--overwrite"]) == 2 and "contradict" in capsys.readouterr().err
    assert train_net.cli(base + ["--auto-resume", "--eval-only"]) == 2 and "--eval-only" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued job runs the first start's command line
    assert train_net.cli(base + ["--overwrite"]) == 0 and calls[-1].resume and not calls[-1].overwrite
    assert "SLURM requeued this job (SLURM_RESTART_COUNT=1)" in capsys.readouterr().err
    assert (out / "model_0000001.pth").exists()  # not moved aside
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    assert train_net.cli(base) == 0 and calls[-1].resume
    assert train_net.cli(base + ["--overwrite"]) == 2 and "--max-restarts 1" in capsys.readouterr().err
    monkeypatch.delenv("TORCHELASTIC_MAX_RESTARTS")
    fresh = tmp_path / "fresh"
    assert (
        train_net.cli(["--config-file", QUICK, "OUTPUT_DIR", str(fresh), "--auto-resume"]) == 0
    )  # nothing there: a new run


def test_preempted_exit_status_and_message(monkeypatch, capsys, train_net, tmp_path):
    def launch(*a, **k):
        raise preemption.TrainingPreempted(signal.SIGUSR1, 41, str(tmp_path / "model_0000041.pth"))

    monkeypatch.setattr(train_net, "launch", launch)
    assert train_net.cli(["--config-file", QUICK, "OUTPUT_DIR", str(tmp_path)]) == 128 + signal.SIGUSR1
    err = capsys.readouterr().err
    assert "stopped by SIGUSR1 after iteration 41" in err and "--auto-resume" in err


def test_a_resume_refuses_ranks_that_see_different_checkpoints(tmp_path):
    """OUTPUT_DIR on disks local to each machine: rank 0 has the checkpoint, the others do not."""
    from detgn.checkpoint.resume import ResumeError, check_same_view

    same = [("gpu001", "model_0000009.pth (10 bytes)")] * 3
    check_same_view(str(tmp_path), same)
    with pytest.raises(ResumeError) as e:
        check_same_view(str(tmp_path), same[:2] + [("gpu002", None), ("gpu002", None)])
    msg = str(e.value)
    assert "rank 2 (host gpu002) finds no checkpoint" in msg and "1 more" in msg and "every machine shares" in msg
