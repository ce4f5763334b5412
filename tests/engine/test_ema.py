"""detgn/engine/ema.py: the average follows its formula once per optimizer step (also with micro-batches), resumes
bit for bit, is evaluated as MODEL_EMA.EVAL says with the trained weights restored after, and is what inference
loads."""

import logging
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from detgn.checkpoint import DetectionCheckpointer
from detgn.config import get_cfg
from detgn.engine import DefaultPredictor, DefaultTrainer, HookBase, seed_all_rng
from detgn.engine.ema import ModelEMA, ema_decay, evaluate_weights
from tests.engine.util import QUICK, small_train_cfg
from tests.util import TINY_MODEL


def test_decay_with_and_without_warmup():
    assert ema_decay(0.999, 0, 0) == 0.999 and ema_decay(0.999, 0, 10**6) == 0.999
    assert ema_decay(0.9998, 2000, 0) == pytest.approx(0.9998 * (1 - math.exp(-1 / 2000)))
    assert ema_decay(0.9998, 2000, 10**6) == pytest.approx(0.9998)


def test_the_average_moves_as_its_formula_and_swaps_in_and_out_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked += 5
    ema.update(model, 0.75)
    assert torch.allclose(ema.state["0.weight"], 0.75 * start["0.weight"] + 0.25 * model[0].weight)
    assert torch.equal(ema.state["0.bias"], start["0.bias"])  # unchanged weights stay where they were
    assert int(ema.state["1.num_batches_tracked"]) == 5  # integer buffers are copied
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.swapped_in(model):
        assert torch.equal(model[0].weight, ema.state["0.weight"])
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items())


def test_evaluation_names_the_weights_it_used_and_restores_the_trained_ones(caplog):
    model = nn.Linear(2, 1)
    ema = ModelEMA(model)
    with torch.no_grad():
        model.weight.add_(3.0)
    trained = model.weight.detach().clone()

    def run(suffix):
        return {"val": {f"bbox{suffix}": {"AP": float(model.weight.detach().sum())}}}

    with caplog.at_level(logging.INFO, logger="detgn.engine.ema"):
        both = evaluate_weights("both", model, ema, run)
    assert both["val"]["bbox"]["AP"] == pytest.approx(float(trained.sum()))
    assert both["val"]["bbox_EMA"]["AP"] == pytest.approx(float(ema.state["weight"].sum()))
    assert "then the EMA weights as <task>_EMA" in caplog.text
    assert evaluate_weights("ema", model, ema, run)["val"] == {
        "bbox": {"AP": pytest.approx(both["val"]["bbox_EMA"]["AP"])}
    }
    assert evaluate_weights("raw", model, ema, run)["val"]["bbox"]["AP"] == pytest.approx(float(trained.sum()))
    assert torch.equal(model.weight, trained)


def _train_cfg(out, max_iter, *opts):
    ema = ["MODEL_EMA.ENABLED", "True", "MODEL_EMA.DECAY", "0.9", "MODEL_EMA.WARMUP_ITERS", "2"]
    return small_train_cfg(out, max_iter, *ema, *opts)


class _Record(HookBase):
    """The weights and the average after each step (it runs after the EMA hook)."""

    def __init__(self):
        self.rows = []

    def after_step(self):
        t = self.trainer
        self.rows.append(
            (
                t.iter,
                {k: v.clone() for k, v in t.model.state_dict().items()},
                {k: v.clone() for k, v in t.ema.state.items()},
            )
        )


def _train(cfg, resume=False, hooks=()):
    seed_all_rng(0)
    trainer = DefaultTrainer(cfg)
    trainer.register_hooks(list(hooks))
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def test_once_per_step_with_micro_batches_and_exact_after_a_resume(tmp_path):
    record = _Record()
    micro = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.IMS_PER_DEVICE", "1"]  # 2 micro-batches per step
    straight = _train(_train_cfg(tmp_path / "straight", 3, *micro), hooks=[record])
    assert straight.micro_batches == 2 and [r[0] for r in record.rows] == [0, 1, 2]  # one update per step
    for it, weights, average in record.rows[1:]:  # each step's average from the previous one and the new weights
        d = ema_decay(0.9, 2, it)
        for k, v in average.items():
            if v.is_floating_point():
                expected = torch.lerp(record.rows[it - 1][2][k], weights[k].float(), 1.0 - d)
                assert torch.allclose(v, expected, rtol=0, atol=1e-7), k
    final = torch.load(tmp_path / "straight" / "model_final.pth", weights_only=True)
    assert all(torch.equal(final["ema"][k], straight.ema.state[k]) for k in final["ema"])
    assert not all(torch.equal(final["ema"][k], final["model"][k]) for k in final["model"])

    _train(_train_cfg(tmp_path / "resumed", 2, *micro))
    resumed = _train(_train_cfg(tmp_path / "resumed", 3, *micro), resume=True)
    assert resumed.start_iter == 2
    a, b = straight.ema.state, resumed.ema.state
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]


def test_inference_loads_the_ema_weights_and_says_so(tmp_path, caplog):
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(TINY_MODEL + ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    from detgn.modeling import build_model

    model = build_model(cfg)
    raw = model.state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in raw.items()}
    torch.save({"model": raw, "ema": ema}, tmp_path / "with_ema.pth")
    torch.save({"model": raw}, tmp_path / "without.pth")
    cfg.merge_from_list(["MODEL_EMA.ENABLED", "True", "MODEL.WEIGHTS", str(tmp_path / "with_ema.pth")])
    with caplog.at_level(logging.INFO):
        loaded = DefaultPredictor(cfg).model.state_dict()
    assert torch.equal(
        loaded["roi_heads.box_predictor.cls_score.weight"], ema["roi_heads.box_predictor.cls_score.weight"]
    )
    assert "its EMA weights (MODEL_EMA.ENABLED)" in caplog.text
    cfg.MODEL_EMA.EVAL = "raw"
    loaded = DefaultPredictor(cfg).model.state_dict()
    assert torch.equal(
        loaded["roi_heads.box_predictor.cls_score.weight"], raw["roi_heads.box_predictor.cls_score.weight"]
    )
    cfg.MODEL_EMA.EVAL = "ema"
    cfg.MODEL.WEIGHTS = str(tmp_path / "without.pth")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        DefaultPredictor(cfg)
    assert "has no EMA weights; its model weights are used" in caplog.text
    DetectionCheckpointer(model).load_for_inference(str(tmp_path / "with_ema.pth"))  # ema=False: the raw weights
    assert torch.equal(model.state_dict()["backbone.fpn_output2.weight"], raw["backbone.fpn_output2.weight"])


@pytest.mark.parametrize(
    "opts, message",
    [
        (["MODEL_EMA.DECAY", "0.99"], "MODEL_EMA.DECAY = 0.99: must be its default 0.9998 unless MODEL_EMA.ENABLED"),
        (["MODEL_EMA.ENABLED", "True", "MODEL_EMA.DECAY", "1.0"], "MODEL_EMA.DECAY = 1.0: must be a number in"),
        (["MODEL_EMA.ENABLED", "True", "MODEL_EMA.EVAL", "best"], "MODEL_EMA.EVAL = 'best': must be one of"),
        (["MODEL_EMA.ENABLED", "True", "MODEL_EMA.WARMUP_ITERS", "-5"], "MODEL_EMA.WARMUP_ITERS = -5"),
    ],
)
def test_ema_keys_are_refused_when_read(opts, message):
    from detgn.jobs import ConfigError, setup_cfg

    with pytest.raises(ConfigError, match=message):
        setup_cfg(SimpleNamespace(config_file=QUICK, opts=opts))
