"""Every weight format loads into the right parameters (values checked) with an honest report."""

import io
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from torch import nn

from detgn.checkpoint import DetectionCheckpointer, WeightsLoadError, WeightsNotFoundError, resolve_weights_path
from detgn.checkpoint import paths as weight_paths
from detgn.config import get_cfg
from detgn.modeling import build_model

from tests.util import REPO, run_tool_here

GN = os.path.join(REPO, "configs", "GN", "mask_rcnn_R_50_FPN_3x_gn.yaml")


class Py2Pickler(pickle._Pickler):
    """Writes bytes and str the way Python 2 wrote str (BINSTRING), like Detectron's pickles."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def _py2_dump(obj, path):
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def _model(norm="GN", num_classes=3):
    cfg = get_cfg()
    cfg.merge_from_file(GN)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    if norm != "GN":
        cfg.MODEL.RESNETS.NORM = norm
    torch.manual_seed(0)
    return build_model(cfg)


def _random_like(sd, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in sd.items()}


# --- inverse mappings written independently of detgn/checkpoint/formats.py -----------------------
def detgn_to_c2(name):
    """backbone.bottom_up.res3.1.conv2.norm.weight -> res3_1_branch2b_gn_s (GN ImageNet files)."""
    n = name[len("backbone.bottom_up.") :]
    suffix = {"weight": "_w", "bias": "_b", "norm.weight": "_gn_s", "norm.bias": "_gn_b"}
    if n.startswith("stem.conv1."):
        return "conv1" + suffix[n[len("stem.conv1.") :]]
    m = re.match(r"res(\d)\.(\d+)\.(conv1|conv2|conv3|shortcut)\.(.*)$", n)
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[m.group(3)]
    return f"res{m.group(1)}_{m.group(2)}_{branch}" + suffix[m.group(4)]


def detgn_to_c2_head(name):
    fixed = {
        "proposal_generator.rpn_head.conv": "conv_rpn_fpn2",
        "proposal_generator.rpn_head.objectness_logits": "rpn_cls_logits_fpn2",
        "proposal_generator.rpn_head.anchor_deltas": "rpn_bbox_pred_fpn2",
        "roi_heads.box_head.fc1": "fc6",
        "roi_heads.box_predictor.cls_score": "cls_score",
        "roi_heads.box_predictor.bbox_pred": "bbox_pred",
        "roi_heads.mask_head.deconv": "conv5_mask",
        "roi_heads.mask_head.predictor": "mask_fcn_logits",
    }
    base, _, leaf = name.rpartition(".")
    norm = base.endswith(".norm")
    if norm:
        base = base[: -len(".norm")]
    if base in fixed:
        stem = fixed[base]
    elif base.startswith("roi_heads.box_head.conv"):
        stem = f"head_conv{base[-1]}"
    elif base.startswith("roi_heads.mask_head.mask_fcn"):
        stem = f"_[mask]_fcn{base[-1]}"
    elif base.startswith("backbone.fpn_lateral"):
        lvl = int(base[-1])
        stem = {
            5: "fpn_inner_res5_2_sum",
            4: "fpn_inner_res4_5_sum_lateral",
            3: "fpn_inner_res3_3_sum_lateral",
            2: "fpn_inner_res2_2_sum_lateral",
        }[lvl]
    elif base.startswith("backbone.fpn_output"):
        lvl = int(base[-1])
        stem = {5: "fpn_res5_2_sum", 4: "fpn_res4_5_sum", 3: "fpn_res3_3_sum", 2: "fpn_res2_2_sum"}[lvl]
    else:
        raise KeyError(name)
    if norm:
        return stem + ("_gn_s" if leaf == "weight" else "_gn_b")
    return stem + ("_w" if leaf == "weight" else "_b")


def _load(model, path):
    ck = DetectionCheckpointer(model, save_to_disk=False)
    ck.load(path, checkpointables=[])
    return ck.last_report


def test_caffe2_imagenet_gn_pickle(tmp_path):
    model = _model()
    sd = model.state_dict()
    bb = {k: v for k, v in _random_like(sd, 1).items() if k.startswith("backbone.bottom_up.")}
    blobs = {detgn_to_c2(k): v.numpy() for k, v in bb.items()}
    blobs.update(
        {
            "pred_w": np.zeros((1000, 2048), np.float32),
            "pred_b": np.zeros(1000, np.float32),
            "conv1_w_momentum": np.zeros((64, 3, 7, 7), np.float32),
            "res2_0_branch2a_w_momentum": np.zeros(1, np.float32),
        }
    )
    _py2_dump({"blobs": blobs}, tmp_path / "R-50-GN.pkl")
    fresh = _model()
    report = _load(fresh, str(tmp_path / "R-50-GN.pkl"))
    after = fresh.state_dict()
    for k, v in bb.items():
        assert torch.equal(after[k], v), k
    assert report["format"] == "caffe2"
    assert len(report["matched"]) == len(bb)
    assert any(k.startswith("roi_heads.box_head") for k in report["missing"])
    assert any(k.startswith("backbone.fpn_lateral") for k in report["missing"])
    assert not report["unused"] and not report["shape_mismatch"]


def test_caffe2_bn_names_into_frozen_bn(tmp_path):
    model = _model(norm="FrozenBN")
    blobs = {
        "res_conv1_bn_s": np.full(64, 2.0, np.float32),
        "res_conv1_bn_b": np.full(64, 3.0, np.float32),
        "conv1_w": np.ones((64, 3, 7, 7), np.float32),
        "res2_0_branch1_bn_s": np.full(256, 5.0, np.float32),
    }
    with open(tmp_path / "R-50.pkl", "wb") as f:
        pickle.dump(blobs, f)
    report = _load(model, str(tmp_path / "R-50.pkl"))
    bu = model.backbone.bottom_up
    assert torch.all(bu.stem.conv1.norm.weight == 2.0) and torch.all(bu.stem.conv1.norm.bias == 3.0)
    assert torch.all(bu.res2[0].shortcut.norm.weight == 5.0)
    assert len(report["matched"]) == 4


def test_caffe2_detection_model_moves_background_last(tmp_path):
    k = 3
    model = _model(num_classes=k)
    sd = model.state_dict()
    vals = _random_like(sd, 2)
    blobs = {}
    for name, v in vals.items():
        if name.startswith("backbone.bottom_up."):
            blobs[detgn_to_c2(name)] = v.numpy()
        else:
            blobs[detgn_to_c2_head(name)] = v.numpy()
    # Detectron heads carry a background class first
    bg_cls_w, bg_cls_b = np.full((1, 1024), 7.0, np.float32), np.full(1, 7.0, np.float32)
    blobs["cls_score_w"] = np.concatenate([bg_cls_w, vals["roi_heads.box_predictor.cls_score.weight"][:k].numpy()])
    blobs["cls_score_b"] = np.concatenate([bg_cls_b, vals["roi_heads.box_predictor.cls_score.bias"][:k].numpy()])
    blobs["bbox_pred_w"] = np.concatenate(
        [np.full((4, 1024), 9.0, np.float32), vals["roi_heads.box_predictor.bbox_pred.weight"].numpy()]
    )
    blobs["bbox_pred_b"] = np.concatenate(
        [np.full(4, 9.0, np.float32), vals["roi_heads.box_predictor.bbox_pred.bias"].numpy()]
    )
    blobs["mask_fcn_logits_w"] = np.concatenate(
        [np.full((1, 256, 1, 1), 5.0, np.float32), vals["roi_heads.mask_head.predictor.weight"].numpy()]
    )
    blobs["mask_fcn_logits_b"] = np.concatenate(
        [np.full(1, 5.0, np.float32), vals["roi_heads.mask_head.predictor.bias"].numpy()]
    )
    _py2_dump({"blobs": blobs}, tmp_path / "model_final.pkl")
    fresh = _model(num_classes=k)
    report = _load(fresh, str(tmp_path / "model_final.pkl"))
    after = fresh.state_dict()
    assert report["missing"] == [] and report["unused"] == []
    cls_w = after["roi_heads.box_predictor.cls_score.weight"]
    assert torch.all(cls_w[-1] == 7.0)  # background moved to the last index
    assert torch.equal(cls_w[:k], vals["roi_heads.box_predictor.cls_score.weight"][:k])
    assert after["roi_heads.box_predictor.cls_score.bias"][-1] == 7.0
    assert torch.equal(
        after["roi_heads.box_predictor.bbox_pred.weight"], vals["roi_heads.box_predictor.bbox_pred.weight"]
    )
    assert torch.equal(after["roi_heads.mask_head.predictor.weight"], vals["roi_heads.mask_head.predictor.weight"])
    for name in sd:
        if not name.startswith("roi_heads.box_predictor") and "predictor" not in name:
            assert torch.equal(after[name], vals[name]), name


def test_detectron2_pkl_full_model_loads_with_nothing_missing(tmp_path):
    model = _model()
    vals = _random_like(model.state_dict(), 3)
    with open(tmp_path / "model_final_d2.pkl", "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in vals.items()}, "__author__": "Detectron2 Model Zoo"}, f)
    fresh = _model()
    report = _load(fresh, str(tmp_path / "model_final_d2.pkl"))
    assert report["format"] == "detectron2" and report["missing"] == [] and report["unused"] == []
    assert len(report["matched"]) == 223
    after = fresh.state_dict()
    assert all(torch.equal(after[k], vals[k]) for k in vals)
    torch.save({"model": vals}, tmp_path / "d2.pth")  # detectron2 .pth (and detgn) checkpoints
    fresh2 = _model()
    rep2 = _load(fresh2, str(tmp_path / "d2.pth"))
    assert rep2["missing"] == [] and rep2["unused"] == []


def test_torchvision_gn_resnet_maps_to_the_same_function(tmp_path):
    import torchvision

    tv = torchvision.models.resnet50(weights=None, norm_layer=lambda c: nn.GroupNorm(32, c))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in tv.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    sd = tv.state_dict()
    torch.save({"state_dict": sd}, tmp_path / "resnet50_gn_timm_style.pth")  # timm-style wrapper
    model = _model()
    report = _load(model, str(tmp_path / "resnet50_gn_timm_style.pth"))
    assert report["format"] == "torchvision"
    assert report["unused"] == ["fc.bias", "fc.weight"]
    assert len(report["matched"]) == len([k for k in sd if not k.startswith("fc.")])
    assert torch.equal(
        model.state_dict()["backbone.bottom_up.res2.0.shortcut.norm.weight"], sd["layer1.0.downsample.1.weight"]
    )
    # same function: torchvision's layer1..4 outputs == detgn's res2..res5
    x = torch.randn(1, 3, 96, 96)
    tv.eval()
    bu = model.backbone.bottom_up.eval()
    with torch.no_grad():
        ours = bu(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for i, layer in enumerate([tv.layer1, tv.layer2, tv.layer3, tv.layer4]):
            y = layer(y)
            torch.testing.assert_close(ours[f"res{i + 2}"], y, rtol=1e-4, atol=1e-4)


def test_nothing_matches_is_an_error(tmp_path):
    torch.save({"foo.weight": torch.zeros(3), "bar.bias": torch.zeros(2)}, tmp_path / "unrelated.pth")
    with pytest.raises(WeightsLoadError, match="None of the 2 tensors"):
        _load(_model(), str(tmp_path / "unrelated.pth"))
    (tmp_path / "garbage.bin").write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(ValueError, match="Cannot read weights file"):
        _load(_model(), str(tmp_path / "garbage.bin"))


def test_shape_mismatch_is_skipped_and_named(tmp_path):
    model = _model(num_classes=3)
    sd = {k: v.clone() for k, v in _model(num_classes=5).state_dict().items()}
    torch.save({"model": sd}, tmp_path / "other_classes.pth")
    report = _load(model, str(tmp_path / "other_classes.pth"))
    names = [k for k, _, _ in report["shape_mismatch"]]
    assert "roi_heads.box_predictor.cls_score.weight" in names and "roi_heads.mask_head.predictor.weight" in names
    assert "roi_heads.box_predictor.cls_score.weight" not in report["matched"]


def test_aliases_and_offline_message(tmp_path, monkeypatch):
    assert (
        weight_paths.alias_to_url("catalog://ImageNetPretrained/FAIR/R-50-GN")
        == "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/47261647/R-50-GN.pkl"
    )
    assert (
        weight_paths.alias_to_url("detectron2://Misc/x/model_final.pkl")
        == "https://dl.fbaipublicfiles.com/detectron2/Misc/x/model_final.pkl"
    )
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))

    def offline(*a, **k):
        raise OSError("network unreachable")

    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsNotFoundError) as e:
        resolve_weights_path("catalog://ImageNetPretrained/FAIR/R-101-GN")
    msg = str(e.value)
    assert "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/47592356/R-101-GN.pkl" in msg
    expected_local = str(tmp_path / "cache" / "detectron" / "ImageNetPretrained" / "47592356" / "R-101-GN.pkl")
    assert expected_local in msg
    os.makedirs(os.path.dirname(expected_local), exist_ok=True)  # the failed download may have made it
    open(expected_local, "wb").write(b"x")
    assert resolve_weights_path("catalog://ImageNetPretrained/FAIR/R-101-GN") == expected_local
    with pytest.raises(WeightsNotFoundError, match="Unknown catalog entry"):
        resolve_weights_path("catalog://ImageNetPretrained/FAIR/R-7")
    with pytest.raises(WeightsNotFoundError, match="not found"):
        resolve_weights_path(str(tmp_path / "missing.pkl"))


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_convert_weights_tool(tmp_path, capsys):
    model = _model()
    bb = {k: v for k, v in _random_like(model.state_dict(), 5).items() if k.startswith("backbone.bottom_up.")}
    _py2_dump({"blobs": {detgn_to_c2(k): v.numpy() for k, v in bb.items()}}, tmp_path / "R-50-GN.pkl")
    argv = [str(tmp_path / "R-50-GN.pkl"), str(tmp_path / "r50gn.pth"), "--config-file", GN]
    status, stdout, err = run_tool_here("convert_weights", argv, capsys)
    assert status == 0, err
    assert "matched" in stdout and "caffe2" in stdout
    out = torch.load(tmp_path / "r50gn.pth", weights_only=True)["model"]
    assert set(out) == set(bb) and all(torch.equal(out[k], bb[k]) for k in bb)


# Blob names as published in Detectron's model zoo files (ImageNetPretrained/47261647/R-50-GN.pkl and
# e2e_mask_rcnn_R-50-FPN_2x_gn), written out literally with the detgn (= detectron2) name each must
# land on: an independent list, so a misreading shared by the loader and a generated test cannot pass.
_DETECTRON_BLOBS = [
    ("conv1_w", "backbone.bottom_up.stem.conv1.weight"),
    ("conv1_gn_s", "backbone.bottom_up.stem.conv1.norm.weight"),
    ("conv1_gn_b", "backbone.bottom_up.stem.conv1.norm.bias"),
    ("res2_0_branch1_w", "backbone.bottom_up.res2.0.shortcut.weight"),
    ("res2_0_branch1_gn_s", "backbone.bottom_up.res2.0.shortcut.norm.weight"),
    ("res2_0_branch1_gn_b", "backbone.bottom_up.res2.0.shortcut.norm.bias"),
    ("res2_0_branch2a_w", "backbone.bottom_up.res2.0.conv1.weight"),
    ("res2_0_branch2a_gn_s", "backbone.bottom_up.res2.0.conv1.norm.weight"),
    ("res2_0_branch2b_w", "backbone.bottom_up.res2.0.conv2.weight"),
    ("res2_0_branch2b_gn_b", "backbone.bottom_up.res2.0.conv2.norm.bias"),
    ("res2_2_branch2c_w", "backbone.bottom_up.res2.2.conv3.weight"),
    ("res3_3_branch2c_gn_s", "backbone.bottom_up.res3.3.conv3.norm.weight"),
    ("res4_5_branch2b_w", "backbone.bottom_up.res4.5.conv2.weight"),
    ("res5_0_branch1_w", "backbone.bottom_up.res5.0.shortcut.weight"),
    ("res5_2_branch2c_gn_b", "backbone.bottom_up.res5.2.conv3.norm.bias"),
    ("fpn_inner_res5_2_sum_w", "backbone.fpn_lateral5.weight"),
    ("fpn_inner_res5_2_sum_gn_s", "backbone.fpn_lateral5.norm.weight"),
    ("fpn_inner_res4_5_sum_lateral_w", "backbone.fpn_lateral4.weight"),
    ("fpn_inner_res4_5_sum_lateral_gn_b", "backbone.fpn_lateral4.norm.bias"),
    ("fpn_inner_res3_3_sum_lateral_w", "backbone.fpn_lateral3.weight"),
    ("fpn_inner_res2_2_sum_lateral_gn_s", "backbone.fpn_lateral2.norm.weight"),
    ("fpn_res5_2_sum_w", "backbone.fpn_output5.weight"),
    ("fpn_res4_5_sum_gn_s", "backbone.fpn_output4.norm.weight"),
    ("fpn_res3_3_sum_w", "backbone.fpn_output3.weight"),
    ("fpn_res2_2_sum_gn_b", "backbone.fpn_output2.norm.bias"),
    ("conv_rpn_fpn2_w", "proposal_generator.rpn_head.conv.weight"),
    ("conv_rpn_fpn2_b", "proposal_generator.rpn_head.conv.bias"),
    ("rpn_cls_logits_fpn2_w", "proposal_generator.rpn_head.objectness_logits.weight"),
    ("rpn_bbox_pred_fpn2_b", "proposal_generator.rpn_head.anchor_deltas.bias"),
    ("head_conv1_w", "roi_heads.box_head.conv1.weight"),
    ("head_conv1_gn_s", "roi_heads.box_head.conv1.norm.weight"),
    ("head_conv4_gn_b", "roi_heads.box_head.conv4.norm.bias"),
    ("fc6_w", "roi_heads.box_head.fc1.weight"),
    ("fc6_b", "roi_heads.box_head.fc1.bias"),
    ("_mask_fcn1_w", "roi_heads.mask_head.mask_fcn1.weight"),
    ("_mask_fcn1_gn_s", "roi_heads.mask_head.mask_fcn1.norm.weight"),
    ("_mask_fcn4_gn_b", "roi_heads.mask_head.mask_fcn4.norm.bias"),
    ("conv5_mask_w", "roi_heads.mask_head.deconv.weight"),
    ("conv5_mask_b", "roi_heads.mask_head.deconv.bias"),
]


def test_real_detectron_blob_names_land_on_the_right_parameters(tmp_path):
    model = _model(num_classes=3)
    sd = model.state_dict()
    g = torch.Generator().manual_seed(11)
    blobs, expected = {}, {}
    for c2_name, detgn_name in _DETECTRON_BLOBS:
        value = torch.randn(sd[detgn_name].shape, generator=g)
        blobs[c2_name] = value.numpy()
        expected[detgn_name] = value
    blobs["pred_w"] = np.zeros((1000, 2048), np.float32)  # ImageNet classifier: ignored
    blobs["conv1_gn_s_momentum"] = np.zeros(64, np.float32)  # solver state: ignored
    _py2_dump({"blobs": blobs}, tmp_path / "detectron_names.pkl")
    fresh = _model(num_classes=3)
    report = _load(fresh, str(tmp_path / "detectron_names.pkl"))
    after = fresh.state_dict()
    assert sorted(report["matched"]) == sorted(expected)
    for name, value in expected.items():
        assert torch.equal(after[name], value), name


def test_load_report_groups_keys_by_module():
    from detgn.checkpoint.detection_checkpoint import _group_keys

    assert _group_keys(["a.b.weight", "a.b.bias", "c", "a.x.norm.weight"]) == [
        "a.b.{bias, weight}",
        "a.x.norm.weight",
        "c",
    ]
