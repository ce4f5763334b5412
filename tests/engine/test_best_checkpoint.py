"""detgn/engine/best_checkpoint.py: model_best.pth follows the best evaluation, never becomes last_checkpoint, keeps
its best across a resume, names a metric that does not exist, and is configured by TEST.BEST_CHECKPOINT."""

import logging
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from detgn.checkpoint import DetectionCheckpointer
from detgn.config import get_cfg
from detgn.engine import BestCheckpointer, DefaultTrainer, EvalHook, PeriodicCheckpointer, TrainerBase, seed_all_rng
from detgn.utils.errors import ConfigValueError
from tests.engine.util import QUICK, SMALL_MODEL


class _Marking(TrainerBase):
    """Each step writes its iteration into the weights, so a checkpoint shows which step it holds."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def run_step(self):
        with torch.no_grad():
            self.model.weight.fill_(float(self.iter))


def _run(tmp_path, start, stop, values, state=None, mode="max", metric="segm/AP"):
    model = nn.Linear(1, 1)
    ck = DetectionCheckpointer(model, str(tmp_path))
    scores = iter(values)
    trainer = _Marking(model)
    best = BestCheckpointer(ck, metric, mode)
    trainer.register_hooks(
        [
            EvalHook(2, lambda: {"val": {"segm": {"AP": next(scores), "AP50": 50.0}}}),
            best,
            PeriodicCheckpointer(ck, period=2, max_iter=stop, extra_state=lambda: {"trainer": trainer.state_dict()}),
        ]
    )
    if state is not None:
        trainer.load_state_dict(state)
    trainer.train(start, stop)
    return best, trainer


def _best_file(tmp_path):
    saved = torch.load(tmp_path / "model_best.pth", weights_only=True)
    return saved["iteration"], float(saved["model"]["weight"]), saved["best_metric"]


def test_the_best_evaluation_is_kept_and_survives_a_resume(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="detgn.engine.best_checkpoint"):
        best, trainer = _run(tmp_path, 0, 6, [10.0, 30.0, 20.0])  # evaluations after iterations 1, 3 and 5
    assert (best.best, best.best_iter) == (30.0, 3)
    assert _best_file(tmp_path) == (3, 3.0, {"name": "segm/AP", "value": 30.0, "mode": "max"})
    assert open(tmp_path / "last_checkpoint").read().strip() == "model_final.pth"  # --resume never picks it
    assert "Best segm/AP (max): 30.0000 at iteration 3, weights in" in caplog.text
    state = torch.load(tmp_path / "model_final.pth", weights_only=True)["trainer"]
    assert state["hooks"]["BestCheckpointer"] == {"best": 30.0, "iteration": 3, "metric": "segm/AP"}

    best, _ = _run(tmp_path, 6, 10, [25.0, 40.0], state=state)  # resumed: 25 is not better, 40 is
    assert (best.best, best.best_iter) == (40.0, 9) and _best_file(tmp_path)[:2] == (9, 9.0)
    best, _ = _run(tmp_path / "min", 0, 4, [3.0, 1.0], mode="min")
    assert (best.best, best.best_iter) == (1.0, 3)


def test_a_metric_no_evaluation_gives_is_named(tmp_path):
    with pytest.raises(
        ConfigValueError, match=r"METRIC = 'segm/APx': the evaluation gave no such metric; there are .*segm/AP"
    ):
        _run(tmp_path, 0, 4, [1.0, 2.0], metric="segm/APx")


class _ScriptedTrainer(DefaultTrainer):
    """DefaultTrainer whose evaluation returns scripted values (no inference)."""

    scores = []

    @classmethod
    def test(cls, cfg, model, evaluators=None, task_suffix=""):
        return {"nuclei_mini_val": {f"segm{task_suffix}": {"AP": cls.scores.pop(0)}}}


def test_default_trainer_keeps_model_best_with_its_ema_weights(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(
        SMALL_MODEL
        + [
            "OUTPUT_DIR",
            str(tmp_path),
            "SOLVER.MAX_ITER",
            "4",
            "TEST.EVAL_PERIOD",
            "2",
            "SOLVER.CHECKPOINT_PERIOD",
            "2",
        ]
        + ["SOLVER.STEPS", "(10,)", "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "160"]
        + ["DATALOADER.NUM_WORKERS", "0", "TEST.BEST_CHECKPOINT.METRIC", "segm_EMA/AP"]
        + ["MODEL_EMA.ENABLED", "True", "MODEL_EMA.EVAL", "both", "MODEL_EMA.DECAY", "0.5"]
    )
    _ScriptedTrainer.scores = [1.0, 5.0, 2.0, 3.0]  # raw, EMA after iteration 1; raw, EMA after iteration 3
    seed_all_rng(0)
    trainer = _ScriptedTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    saved = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert saved["iteration"] == 1 and saved["best_metric"]["value"] == 5.0 and "ema" in saved
    assert os.path.exists(tmp_path / "model_final.pth")


@pytest.mark.parametrize(
    "opts, message",
    [
        (["TEST.BEST_CHECKPOINT.MODE", "min"], "MODE = 'min': must be its default 'max' unless"),
        (["TEST.BEST_CHECKPOINT.METRIC", "AP"], "METRIC = 'AP': must be '' \\(off\\) or a metrics.json key"),
        (["TEST.BEST_CHECKPOINT.METRIC", "segm/AP", "DATASETS.TEST", "()"], "without DATASETS.TEST"),
        (["TEST.BEST_CHECKPOINT.METRIC", "segm/AP", "TEST.BEST_CHECKPOINT.MODE", "median"], "MODE = 'median'"),
    ],
)
def test_best_checkpoint_keys_are_refused_when_read(opts, message):
    from detgn.jobs import ConfigError, setup_cfg

    with pytest.raises(ConfigError, match=message):
        setup_cfg(SimpleNamespace(config_file=QUICK, opts=opts))
