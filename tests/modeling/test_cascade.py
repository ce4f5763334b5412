"""Cascade R-CNN ROI heads: training losses and statistics per stage, the 1/S gradient scale, the
equivalence of a one-stage cascade with class-agnostic StandardROIHeads, config refusals.
(Parity with detectron2's Cascade outputs: tests/modeling/test_detectron2_parity.py.)"""

import pytest
import torch

from detgn.config.rules import check_config
from detgn.modeling import build_model
from detgn.modeling.roi_heads.cascade_rcnn import _ScaleGradient
from detgn.utils.errors import ConfigValueError
from detgn.utils.events import EventStorage

from .util import make_inputs, small_gn_cfg


def _cascade_cfg(stages=3):
    cfg = small_gn_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.5, 0.6, 0.7)[:stages]
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = (
        (10.0, 10.0, 5.0, 5.0),
        (20.0, 20.0, 10.0, 10.0),
        (30.0, 30.0, 15.0, 15.0),
    )[:stages]
    return cfg


def test_training_step_gives_each_stage_its_losses_and_counts():
    cfg = _cascade_cfg()
    check_config(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert [k for k in model.state_dict() if k.startswith("roi_heads.box_predictor.2.")] == [
        "roi_heads.box_predictor.2.cls_score.weight",
        "roi_heads.box_predictor.2.cls_score.bias",
        "roi_heads.box_predictor.2.bbox_pred.weight",
        "roi_heads.box_predictor.2.bbox_pred.bias",
    ]
    assert model.roi_heads.box_predictor[0].bbox_pred.out_features == 4  # class-agnostic
    assert [p.box2box_transform.weights for p in model.roi_heads.box_predictor] == [
        (10.0, 10.0, 5.0, 5.0),
        (20.0, 20.0, 10.0, 10.0),
        (30.0, 30.0, 15.0, 15.0),
    ]
    with EventStorage() as storage:
        losses = model([make_inputs(), make_inputs(seed=1)])
        stats = storage.pop_model_stats()
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_mask"} | {
        f"{n}_stage{k}" for n in ("loss_cls", "loss_box_reg") for k in range(3)
    }
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for k in range(3):
        assert model.roi_heads.box_head[k].fc1.weight.grad.abs().sum() > 0
        assert model.roi_heads.box_predictor[k].cls_score.weight.grad.abs().sum() > 0
    assert {"roi_head/num_fg_samples", "stage1/roi_head/num_fg_samples", "stage2/roi_head/num_bg_samples"} <= set(stats)
    for k in (1, 2):  # stage k labels every (non-empty) box of stage k - 1, i.e. at most the 64 sampled ROIs per image
        total = float(stats[f"stage{k}/roi_head/num_fg_samples"]) + float(stats[f"stage{k}/roi_head/num_bg_samples"])
        assert 0 < total <= 64
    model.eval()
    with torch.no_grad():
        out = model([make_inputs(with_gt=False)])[0]["instances"]
    assert out.has("pred_masks") and out.scores.le(1).all()


def test_scale_gradient_is_identity_forward_and_scales_backward():
    x = torch.randn(5, 3, requires_grad=True)
    y = _ScaleGradient.apply(x, 1.0 / 3)
    assert torch.equal(y, x)
    (y * 2).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 2.0 / 3))


def test_one_stage_cascade_equals_standard_heads_with_class_agnostic_boxes():
    """With S = 1 the cascade is Fast R-CNN: same losses (same sampling) and same detections as
    StandardROIHeads, box_head.0/box_predictor.0 renamed. Checks that the stage plumbing adds nothing."""
    std_cfg = small_gn_cfg()
    std_cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    torch.manual_seed(0)
    standard = build_model(std_cfg)
    cascade = build_model(_cascade_cfg(stages=1))
    sd = {
        k.replace("roi_heads.box_head.", "roi_heads.box_head.0.").replace(
            "roi_heads.box_predictor.", "roi_heads.box_predictor.0."
        ): v
        for k, v in standard.state_dict().items()
    }
    cascade.load_state_dict(sd)
    inputs = [make_inputs(), make_inputs(seed=1)]
    results = []
    for model in (standard, cascade):
        torch.manual_seed(1)
        losses = model.train()(inputs)
        model.eval()
        with torch.no_grad():
            results.append((losses, model([make_inputs(with_gt=False, seed=3)])[0]["instances"]))
    (l_std, d_std), (l_cas, d_cas) = results
    assert set(l_cas) == {
        k.replace("loss_cls", "loss_cls_stage0").replace("loss_box_reg", "loss_box_reg_stage0") for k in l_std
    }
    for k, v in l_std.items():
        name = {"loss_cls": "loss_cls_stage0", "loss_box_reg": "loss_box_reg_stage0"}.get(k, k)
        assert torch.allclose(v, l_cas[name], rtol=1e-5, atol=1e-6), k
    assert torch.allclose(d_std.pred_boxes.tensor, d_cas.pred_boxes.tensor, atol=1e-4)
    assert torch.allclose(d_std.scores, d_cas.scores, atol=1e-6) and torch.equal(d_std.pred_classes, d_cas.pred_classes)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": False}, "CLS_AGNOSTIC_BBOX_REG True"),
        ({"MODEL.ROI_BOX_CASCADE_HEAD.IOUS": (0.4, 0.6, 0.7)}, r"IOUS\[0\]"),
        (
            {"MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS": ((10.0, 10.0, 5.0, 5.0),)},
            "one per MODEL.ROI_BOX_CASCADE_HEAD.IOUS",
        ),
    ],
)
def test_inconsistent_cascade_configs_are_refused_in_one_line(change, match):
    cfg = _cascade_cfg()
    for k, v in change.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    with pytest.raises(ConfigValueError, match=match):
        check_config(cfg)
    if "BBOX_REG_WEIGHTS" not in "".join(change):
        with pytest.raises(ConfigValueError, match=match):
            build_model(cfg)  # refused by the heads too, for code that skips check_config


def test_compiling_the_box_head_compiles_every_stage():
    cfg = _cascade_cfg()
    cfg.MODEL.COMPILE.PARTS = ["box_head"]
    cfg.MODEL.COMPILE.BACKEND = "aot_eager"
    model = build_model(cfg)
    assert all(getattr(stage, "_compiled_call_impl", None) is not None for stage in model.roi_heads.box_head)
