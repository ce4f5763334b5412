"""Inference never runs on heads the weights file left random: Mask R-CNN weights in a Cascade config are refused
(eval-only, the predictor behind demo/export, convert_weights) in one line naming the modules, unless asked."""

import logging
import os

import pytest
import torch

from detgn.checkpoint import DetectionCheckpointer
from detgn.checkpoint.inference_weights import PartialWeightsError
from detgn.config import get_cfg
from detgn.engine import DefaultPredictor
from detgn.modeling import build_model
from tests.engine.util import SMALL_MODEL as SMALL_MODEL_ARGS
from tests.util import QUICK, QUICK_RUN_ARGS, tool_module

CASCADE = ["MODEL.ROI_HEADS.NAME", "CascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"]


def _cfg(extra=()):
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(SMALL_MODEL_ARGS + list(extra) + ["MODEL.DEVICE", "cpu"])
    return cfg


@pytest.fixture(scope="module")
def mask_rcnn_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(_cfg())
    path = tmp_path_factory.mktemp("w") / "mask_rcnn.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_other_family_refused_for_inference(mask_rcnn_weights):
    model = build_model(_cfg(CASCADE))
    with pytest.raises(PartialWeightsError) as e:
        DetectionCheckpointer(model).load_for_inference(mask_rcnn_weights)
    msg = str(e.value)
    assert "\n" not in msg and "roi_heads.box_head.0" in msg and "random initialisation" in msg
    assert "another architecture" in msg and "--allow-partial-weights" in msg


def test_override_loads_and_warns(mask_rcnn_weights, caplog):
    model = build_model(_cfg(CASCADE))
    with caplog.at_level(logging.WARNING):
        report = DetectionCheckpointer(model).load_for_inference(mask_rcnn_weights, allow_partial=True)
    assert report["missing"] and "keep their random initialisation" in caplog.text


def test_same_family_loads_and_other_class_count_refused(mask_rcnn_weights):
    DetectionCheckpointer(build_model(_cfg())).load_for_inference(mask_rcnn_weights)  # covers the model: no error
    model = build_model(_cfg(["MODEL.ROI_HEADS.NUM_CLASSES", "7"]))
    with pytest.raises(PartialWeightsError, match="another NUM_CLASSES"):
        DetectionCheckpointer(model).load_for_inference(mask_rcnn_weights)


def test_predictor_refuses_and_allows(mask_rcnn_weights):
    cfg = _cfg(CASCADE + ["MODEL.WEIGHTS", mask_rcnn_weights])
    with pytest.raises(PartialWeightsError):
        DefaultPredictor(cfg)
    DefaultPredictor(cfg, allow_partial_weights=True)


def test_eval_only_with_other_family_exits_2(quick_run, tmp_path, capsys):
    out, _ = quick_run
    argv = [
        "--config-file",
        QUICK,
        "--eval-only",
        *QUICK_RUN_ARGS,
        *SMALL_MODEL_ARGS,
        *CASCADE,
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
    ]
    status = tool_module("train_net").cli(argv)
    err = capsys.readouterr().err
    assert status == 2 and "leaves" in err and "roi_heads.box_head.0" in err and "--allow-partial-weights" in err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "eval" / "metrics.json")


def test_convert_weights_between_families_refused(mask_rcnn_weights, tmp_path, capsys):
    out = tmp_path / "cascade.pth"
    status = tool_module("convert_weights").main(
        [mask_rcnn_weights, str(out), "--config-file", QUICK, *SMALL_MODEL_ARGS, *CASCADE]
    )
    err = capsys.readouterr().err
    assert status == 2 and "another architecture" in err and not out.exists()


def test_demo_with_other_family_exits_2(mask_rcnn_weights, tmp_path, capsys):
    img = os.path.join(os.path.dirname(QUICK), "..", "..", "datasets", "nuclei_mini", "val")
    status = tool_module("demo").main(
        [
            "--config-file",
            QUICK,
            "--input",
            img,
            "--output",
            str(tmp_path / "out"),
            *SMALL_MODEL_ARGS,
            *CASCADE,
            "MODEL.WEIGHTS",
            mask_rcnn_weights,
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "random initialisation" in err and "--allow-partial-weights" in err
    assert not any(n.endswith(".png") for n in os.listdir(tmp_path / "out")) if (tmp_path / "out").exists() else True
