"""Detectron (Caffe2) pickles: {"blobs": {...}} or flat blobs (conv1_w, res2_0_branch2a_gn_s, fpn_*, rpn_*, head_conv*,
fc6, cls_score, bbox_pred, _[mask]_fcn* / _mask_fcn* (GN), conv5_mask, mask_fcn_logits), renamed by rule; the
background class moves from Detectron's index 0 to detectron2's last index."""

import re
from typing import Any, Dict, Optional

import numpy as np
import torch

from . import WeightsConverter, tensorize

__all__ = ["Caffe2Converter", "c2_names_to_detgn", "looks_caffe2"]


def looks_caffe2(keys) -> bool:
    return any(k in ("conv1_w", "res_conv1_bn_s", "conv1_gn_s") or re.match(r"res\d+_\d+_branch", k) for k in keys)


class Caffe2Converter(WeightsConverter):
    name = "caffe2"

    def looks_like(self, obj):
        from . import state_of

        return "blobs" in obj or looks_caffe2(list(state_of(obj)))

    def convert(self, obj, backbone_prefix):
        blobs = obj.get("blobs", obj.get("model", obj))
        return {"model": tensorize(c2_names_to_detgn(blobs, backbone_prefix))}


def _c2_norm_suffix(rest: str) -> Optional[str]:
    return {
        "_gn_s": "norm.weight",
        "_gn_b": "norm.bias",
        "_bn_s": "norm.weight",
        "_bn_b": "norm.bias",
        "_bn_rm": "norm.running_mean",
        "_bn_riv": "norm.running_var",
        "_w": "weight",
        "_b": "bias",
    }.get(rest)


def c2_names_to_detgn(blobs: Dict[str, Any], backbone_prefix: str) -> Dict[str, Any]:
    """Rename Detectron (Caffe2) blobs to detgn keys. `backbone_prefix` is where the ResNet lives
    (e.g. "backbone.bottom_up."). Unknown blobs keep their names (reported as unused); classifier
    blobs (pred_w/b) and *_momentum are dropped. The detection-model heads are converted too, with
    the background class moved from index 0 to the last index (cls_score) or removed (bbox_pred, masks)."""
    out = {}
    for name, value in blobs.items():
        if name.endswith("_momentum") or name in ("pred_w", "pred_b", "lr", "weight_order", "model_iter"):
            continue
        new = _c2_one(name, backbone_prefix)
        out[new if new is not None else name] = value
    return _fix_background(out)


_C2_LEAF = r"(_gn_s|_gn_b|_bn_s|_bn_b|_bn_rm|_bn_riv|_w|_b)"
_WB = {"w": "weight", "b": "bias"}
# (pattern, target); "{bp}" in a target is the backbone prefix. Names as Detectron writes them:
# ImageNet ResNets (conv1/res_conv1, resS_B_branch{1,2a,2b,2c}) and detection models (FPN, RPN,
# 4conv1fc / 2fc box heads, mask heads; the GN mask head is "_mask_fcnN", the others "_[mask]_fcnN").
_C2_RULES = [
    (re.compile(rf"^(?:conv1|res_conv1){_C2_LEAF}$"), lambda m: f"{{bp}}stem.conv1.{_c2_norm_suffix(m[1])}"),
    (
        re.compile(rf"^res(\d)_(\d+)_branch(2a|2b|2c|1){_C2_LEAF}$"),
        lambda m: f"{{bp}}res{m[1]}.{m[2]}.{_C2_BRANCH[m[3]]}.{_c2_norm_suffix(m[4])}",
    ),
    (
        re.compile(r"^fpn_inner_res(\d)_\d+_sum(?:_lateral)?(_gn_s|_gn_b|_w|_b)$"),
        lambda m: f"backbone.fpn_lateral{m[1]}.{_c2_norm_suffix(m[2])}",
    ),
    (
        re.compile(r"^fpn_res(\d)_\d+_sum(_gn_s|_gn_b|_w|_b)$"),
        lambda m: f"backbone.fpn_output{m[1]}.{_c2_norm_suffix(m[2])}",
    ),
    (
        re.compile(r"^(conv_rpn|rpn_cls_logits|rpn_bbox_pred)_fpn2_(w|b)$"),
        lambda m: f"proposal_generator.rpn_head.{_C2_RPN[m[1]]}.{_WB[m[2]]}",
    ),
    (
        re.compile(r"^head_conv(\d)(_gn_s|_gn_b|_w|_b)$"),
        lambda m: f"roi_heads.box_head.conv{m[1]}.{_c2_norm_suffix(m[2])}",
    ),
    (re.compile(r"^fc(6|7)_(w|b)$"), lambda m: f"roi_heads.box_head.fc{int(m[1]) - 5}.{_WB[m[2]]}"),
    (re.compile(r"^(cls_score|bbox_pred)_(w|b)$"), lambda m: f"roi_heads.box_predictor.{m[1]}.{_WB[m[2]]}"),
    (
        re.compile(r"^_(?:\[mask\]|mask)_fcn(\d)(_gn_s|_gn_b|_w|_b)$"),
        lambda m: f"roi_heads.mask_head.mask_fcn{m[1]}.{_c2_norm_suffix(m[2])}",
    ),
    (re.compile(r"^conv5_mask_(w|b)$"), lambda m: f"roi_heads.mask_head.deconv.{_WB[m[1]]}"),
    (re.compile(r"^mask_fcn_logits_(w|b)$"), lambda m: f"roi_heads.mask_head.predictor.{_WB[m[1]]}"),
]
_C2_BRANCH = {"2a": "conv1", "2b": "conv2", "2c": "conv3", "1": "shortcut"}
_C2_RPN = {"conv_rpn": "conv", "rpn_cls_logits": "objectness_logits", "rpn_bbox_pred": "anchor_deltas"}


def _c2_one(name: str, bp: str) -> Optional[str]:
    for pattern, target in _C2_RULES:
        m = pattern.match(name)
        if m:
            return target(m).replace("{bp}", bp)
    return None


def _roll_bg(x):
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    return torch.cat([x[1:], x[:1]], dim=0)


def _drop_first(x, n):
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    return x[n:]


def _fix_background(d):
    """Detectron puts background at index 0; detectron2/detgn at the last index (cls) or nowhere (reg, masks)."""
    for suffix in ("weight", "bias"):
        k = f"roi_heads.box_predictor.cls_score.{suffix}"
        if k in d:
            d[k] = _roll_bg(d[k])
        k = f"roi_heads.box_predictor.bbox_pred.{suffix}"
        if k in d:
            x = torch.as_tensor(np.asarray(d[k])) if not isinstance(d[k], torch.Tensor) else d[k]
            cls_bias = d.get("roi_heads.box_predictor.cls_score.bias")
            if cls_bias is not None and x.shape[0] == 4 * len(cls_bias):  # class-specific incl. background
                d[k] = _drop_first(x, 4)
        k = f"roi_heads.mask_head.predictor.{suffix}"
        cls = d.get("roi_heads.box_predictor.cls_score.bias")
        if k in d and cls is not None:
            x = torch.as_tensor(np.asarray(d[k])) if not isinstance(d[k], torch.Tensor) else d[k]
            if x.shape[0] == len(cls):  # K + 1 mask channels incl. background
                d[k] = _drop_first(x, 1)
    return d
