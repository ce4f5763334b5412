"""mmdetection checkpoints: every supported layout (tests/data/mmdet_layouts, enumerated from mmdetection's
module code) loads with 0 missing / 0 unused keys and values in the right places; layouts that would load
wrongly are refused in one line; the mmcv weight-standardisation formula equals mmcv's conv_ws_2d and is
chosen automatically for mmdetection weights, and kept through detgn checkpoints."""

import os
import pytest
import torch
from torch.nn import functional as F

from detgn.checkpoint import DetectionCheckpointer
from detgn.checkpoint.formats import convert_to_detgn, detect_format
from detgn.checkpoint.converters.mmdet import MMDetLayoutError
from detgn.config import get_cfg
from detgn.layers import Conv2d
from detgn.modeling import build_model

from tests.util import REPO

LAYOUTS = os.path.join(REPO, "tests", "data", "mmdet_layouts")
GN = os.path.join(REPO, "configs", "mmdet", "mask_rcnn_R_50_FPN_2x_gn.yaml")
GN_WS = os.path.join(REPO, "configs", "mmdet", "mask_rcnn_R_50_FPN_2x_gn_ws.yaml")
FROZEN_BN = os.path.join(REPO, "configs", "Misc", "mask_rcnn_R_50_FPN_1x_frozenbn.yaml")

# layout file -> (detgn config, overrides) of the same network
CASES = {
    "mask_rcnn_r50_fpn_gn_all": (GN, []),
    "mask_rcnn_r101_fpn_gn_all": (GN, ["MODEL.RESNETS.DEPTH", 101]),
    "mask_rcnn_x50_32x4d_fpn_gn_ws_all": (GN_WS, ["MODEL.RESNETS.NUM_GROUPS", 32, "MODEL.RESNETS.WIDTH_PER_GROUP", 4]),
    "mask_rcnn_x101_32x4d_fpn_gn_ws_all": (
        GN_WS,
        ["MODEL.RESNETS.DEPTH", 101, "MODEL.RESNETS.NUM_GROUPS", 32, "MODEL.RESNETS.WIDTH_PER_GROUP", 4],
    ),
    "faster_rcnn_r50_fpn_gn_ws_all": (GN_WS, ["MODEL.MASK_ON", False]),
    "mask_rcnn_r50_fpn_bn": (FROZEN_BN, ["MODEL.RESNETS.STRIDE_IN_1X1", False]),
}


def _layout(name):
    keys = []
    for line in open(os.path.join(LAYOUTS, name + ".txt")):
        if line.startswith("#"):
            continue
        k, shape = line.rstrip("\n").split("\t")
        keys.append((k, tuple(int(d) for d in shape.strip("()").split(",") if d.strip())))
    return keys


def _model(config, overrides):
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(overrides)
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


def _mmdet_checkpoint(keys, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {k: (torch.tensor(5) if not s else torch.randn(s, generator=g)) for k, s in keys}
    return {"meta": {"mmdet_version": "3.3.0", "CLASSES": ["c"] * 80}, "state_dict": sd}


@pytest.mark.parametrize("name", sorted(CASES))
def test_mmdet_layout_loads_with_nothing_missing_or_unused(name):
    keys = _layout(name)
    obj = _mmdet_checkpoint(keys)
    assert detect_format(obj) == "mmdet"
    model = _model(*CASES[name])
    ck = DetectionCheckpointer(model)
    ck._load_model(convert_to_detgn(obj, model.state_dict()))
    report = ck.last_report
    assert (report["format"], report["missing"], report["unused"], report["shape_mismatch"]) == ("mmdet", [], [], [])
    assert len(report["matched"]) == len([k for k, _ in keys if not k.endswith("num_batches_tracked")])
    sd, src = model.state_dict(), obj["state_dict"]
    pairs = {
        "backbone.conv1.weight": "backbone.bottom_up.stem.conv1.weight",
        "backbone.layer3.0.downsample.0.weight": "backbone.bottom_up.res4.0.shortcut.weight",
        "backbone.layer2.1.conv2.weight": "backbone.bottom_up.res3.1.conv2.weight",
        "neck.lateral_convs.0.conv.weight": "backbone.fpn_lateral2.weight",
        "neck.fpn_convs.3.conv.weight": "backbone.fpn_output5.weight",
        "rpn_head.rpn_reg.weight": "proposal_generator.rpn_head.anchor_deltas.weight",
        "roi_head.bbox_head.fc_cls.weight": "roi_heads.box_predictor.cls_score.weight",
        "roi_head.bbox_head.shared_fcs.0.weight": "roi_heads.box_head.fc1.weight",
    }
    norm = "gn" if "gn" in name else "bn"
    pairs[f"backbone.layer4.2.{norm}3.weight"] = "backbone.bottom_up.res5.2.conv3.norm.weight"
    if "mask" in name:
        pairs["roi_head.mask_head.conv_logits.weight"] = "roi_heads.mask_head.predictor.weight"
        pairs["roi_head.mask_head.upsample.weight"] = "roi_heads.mask_head.deconv.weight"
    if norm == "gn":
        pairs["roi_head.bbox_head.shared_convs.3.gn.bias"] = "roi_heads.box_head.conv4.norm.bias"
    for a, b in pairs.items():
        assert torch.equal(src[a], sd[b]), (a, b)


def test_mmcv_weight_standardisation_equals_mmcvs_formula_and_differs_from_timms():
    torch.manual_seed(0)
    x = torch.randn(2, 256, 9, 9)
    conv = Conv2d(256, 64, 3, padding=1, bias=False, weight_standardization="mmcv")
    w = conv.weight
    flat = w.view(64, -1)
    # mmcv.cnn.bricks.conv_ws.conv_ws_2d, written out: unbiased std, eps added outside the square root
    w_mmcv = (w - flat.mean(dim=1).view(-1, 1, 1, 1)) / (flat.std(dim=1).view(-1, 1, 1, 1) + 1e-5)
    assert torch.allclose(conv(x), F.conv2d(x, w_mmcv, None, 1, 1), atol=1e-5, rtol=0)
    timm = Conv2d(256, 64, 3, padding=1, bias=False, weight_standardization="timm")
    with torch.no_grad():
        conv.weight.normal_()  # unit-scale kernels: the unbiased/biased ratio sqrt(2304 / 2303) dominates the eps terms
    timm.weight = conv.weight
    rel = ((conv._weight() - timm._weight()).abs() / timm._weight().abs().clamp(min=1e-3)).median().item()
    assert 1.5e-4 < rel < 3e-4  # ~2e-4 on 3x3x256 kernels (more for small-scale kernels, where eps weighs in)


def test_mmdet_gn_ws_weights_switch_auto_convs_to_mmcv_and_a_detgn_checkpoint_keeps_it(tmp_path):
    name = "faster_rcnn_r50_fpn_gn_ws_all"
    model = _model(GN_WS, ["MODEL.MASK_ON", False, "MODEL.WEIGHT_STANDARDIZATION.CONVENTION", "auto"])
    ws = [m for m in model.modules() if isinstance(m, Conv2d) and m.weight_standardization]
    assert ws and {m.ws_convention for m in ws} == {"timm"}
    ck = DetectionCheckpointer(model, str(tmp_path))
    ck._load_model(convert_to_detgn(_mmdet_checkpoint(_layout(name)), model.state_dict()))
    assert {m.ws_convention for m in ws} == {"mmcv"}
    ck.save("model_mmcv")
    assert torch.load(tmp_path / "model_mmcv.pth", weights_only=True)["ws_convention"] == "mmcv"
    again = _model(GN_WS, ["MODEL.MASK_ON", False, "MODEL.WEIGHT_STANDARDIZATION.CONVENTION", "auto"])
    DetectionCheckpointer(again).load(str(tmp_path / "model_mmcv.pth"))
    assert {m.ws_convention for m in again.modules() if isinstance(m, Conv2d) and m.weight_standardization} == {"mmcv"}
    explicit = _model(GN_WS, ["MODEL.MASK_ON", False, "MODEL.WEIGHT_STANDARDIZATION.CONVENTION", "timm"])
    DetectionCheckpointer(explicit).load(str(tmp_path / "model_mmcv.pth"))  # explicit: kept (with a warning)
    assert {m.ws_convention for m in explicit.modules() if isinstance(m, Conv2d) and m.weight_standardization} == {
        "timm"
    }


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"bbox_head.fc_cls.weight": torch.zeros(81, 1024)}, "mmdetection 1.x checkpoint"),
        ({"roi_head.bbox_head.1.fc_cls.weight": torch.zeros(81, 1024)}, "Cascade checkpoint"),
        ({"backbone.layer2.0.conv2.conv_offset.weight": torch.zeros(18, 128, 3, 3)}, "deformable"),
    ],
)
def test_layouts_that_would_load_wrongly_are_refused(extra, match):
    obj = {
        "state_dict": {
            "backbone.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1),
            "neck.fpn_convs.0.conv.weight": torch.zeros(1),
            **extra,
        }
    }
    with pytest.raises(MMDetLayoutError, match=match):
        convert_to_detgn(obj, {"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)})


def test_mmdet_imagenet_gn_backbone_names_load_through_the_resnet_reader():
    """open-mmlab://detectron/resnet50_gn style: conv1, gn1, layerX.Y.gnZ, downsample.0/1, no prefix."""
    keys = [(k[len("backbone.") :], s) for k, s in _layout("mask_rcnn_r50_fpn_gn_all") if k.startswith("backbone.")]
    obj = {k: torch.randn(s) for k, s in keys}
    model = _model(GN, [])
    ck = DetectionCheckpointer(model)
    ck._load_model(convert_to_detgn(obj, model.state_dict()))
    assert ck.last_report["unused"] == [] and not [
        k for k in ck.last_report["missing"] if k.startswith("backbone.bottom_up.")
    ]
    assert torch.equal(model.state_dict()["backbone.bottom_up.res2.0.conv1.norm.weight"], obj["layer1.0.gn1.weight"])


def test_convert_weights_from_mmdet_writes_the_convention_and_refuses_other_files(tmp_path, capsys, monkeypatch):
    src = tmp_path / "mmdet.pth"
    torch.save(_mmdet_checkpoint(_layout("faster_rcnn_r50_fpn_gn_ws_all")), src)
    monkeypatch.syspath_prepend(os.path.join(REPO, "tools"))
    from convert_weights import main  # the tool's own entry point, in this process

    common = ["--config-file", GN_WS, "MODEL.MASK_ON", "False", "MODEL.WEIGHT_STANDARDIZATION.CONVENTION", "auto"]
    assert main([str(src), str(tmp_path / "out.pth"), "--from", "mmdet"] + common) == 0, capsys.readouterr().err[-2000:]
    out = torch.load(tmp_path / "out.pth", weights_only=True)
    assert out["source_format"] == "mmdet" and out["ws_convention"] == "mmcv"
    capsys.readouterr()
    torch.save({"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(64, 3, 7, 7)}}, tmp_path / "detgn.pth")
    assert main([str(tmp_path / "detgn.pth"), str(tmp_path / "x.pth"), "--from", "mmdet"] + common) == 2
    err = capsys.readouterr().err
    assert "is not an mmdetection detector" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "x.pth").exists()
