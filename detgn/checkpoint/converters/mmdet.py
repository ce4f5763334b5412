"""mmdetection (2.x / 3.x) names -> detgn (= detectron2) names, in one table.

Supported layouts: Mask / Faster R-CNN with a ResNet or ResNeXt backbone (`style='pytorch'`, the stride
in the 3x3), FPN, RPNHead, Shared2FC / Shared4Conv1FC box heads and FCNMaskHead, with BN, GN or GN+WS
(mmcv's ConvWS2d has the names of a plain conv). mmdetection's own configs `configs/gn/*`,
`configs/gn+ws/*` and `configs/mask_rcnn/*` build exactly these. mmdetection ImageNet backbones
(`open-mmlab://detectron/resnet50_gn`, `jhu/resnet50_gn_ws`: conv1, gn1, layerX.Y.convZ / gnZ,
downsample.0/1 without the `backbone.` prefix) load through the torchvision converter (torchvision.py).

Conventions that agree with detgn and need no change: background is the last class of `fc_cls`
(mmdetection >= 2.0), box deltas are (dx, dy, dw, dh) divided by target_stds = 1 / BBOX_REG_WEIGHTS,
no +1 in widths, anchors centred on k * stride (offset 0), RoIAlign aligned with adaptive sampling,
the FPN level of an ROI floor(log2(sqrt(area) / 56)). What differs is in docs/weights.md.
"""

import re
from typing import Any, Dict, List, Optional

from detgn.utils.errors import UserInputError

from . import WeightsConverter

__all__ = ["MMDetConverter", "MMDetLayoutError", "looks_mmdet", "mmdet_names_to_detgn"]


class MMDetLayoutError(UserInputError, ValueError):
    """An mmdetection checkpoint of a layout detgn cannot load faithfully."""


_NORM = r"(?:bn|gn)"
_LEAF = r"(weight|bias|running_mean|running_var)"
# (pattern on the mmdet key, detgn key template); {bp} is where the ResNet lives ("backbone.bottom_up.")
_RULES = [
    (r"^backbone\.conv1\.weight$", "{bp}stem.conv1.weight"),
    (rf"^backbone\.{_NORM}1\.{_LEAF}$", "{bp}stem.conv1.norm.{0}"),
    (r"^backbone\.layer(\d)\.(\d+)\.conv(\d)\.weight$", "{bp}res{S0}.{1}.conv{2}.weight"),
    (rf"^backbone\.layer(\d)\.(\d+)\.{_NORM}(\d)\.{_LEAF}$", "{bp}res{S0}.{1}.conv{2}.norm.{3}"),
    (r"^backbone\.layer(\d)\.(\d+)\.downsample\.0\.weight$", "{bp}res{S0}.{1}.shortcut.weight"),
    (rf"^backbone\.layer(\d)\.(\d+)\.downsample\.1\.{_LEAF}$", "{bp}res{S0}.{1}.shortcut.norm.{2}"),
    (r"^neck\.lateral_convs\.(\d)\.conv\.(weight|bias)$", "backbone.fpn_lateral{P0}.{1}"),
    (rf"^neck\.lateral_convs\.(\d)\.{_NORM}\.{_LEAF}$", "backbone.fpn_lateral{P0}.norm.{1}"),
    (r"^neck\.fpn_convs\.(\d)\.conv\.(weight|bias)$", "backbone.fpn_output{P0}.{1}"),
    (rf"^neck\.fpn_convs\.(\d)\.{_NORM}\.{_LEAF}$", "backbone.fpn_output{P0}.norm.{1}"),
    (r"^rpn_head\.rpn_conv\.(weight|bias)$", "proposal_generator.rpn_head.conv.{0}"),
    (r"^rpn_head\.rpn_cls\.(weight|bias)$", "proposal_generator.rpn_head.objectness_logits.{0}"),
    (r"^rpn_head\.rpn_reg\.(weight|bias)$", "proposal_generator.rpn_head.anchor_deltas.{0}"),
    (r"^roi_head\.bbox_head\.shared_convs\.(\d)\.conv\.(weight|bias)$", "roi_heads.box_head.conv{N0}.{1}"),
    (rf"^roi_head\.bbox_head\.shared_convs\.(\d)\.{_NORM}\.{_LEAF}$", "roi_heads.box_head.conv{N0}.norm.{1}"),
    (r"^roi_head\.bbox_head\.shared_fcs\.(\d)\.(weight|bias)$", "roi_heads.box_head.fc{N0}.{1}"),
    (r"^roi_head\.bbox_head\.fc_cls\.(weight|bias)$", "roi_heads.box_predictor.cls_score.{0}"),
    (r"^roi_head\.bbox_head\.fc_reg\.(weight|bias)$", "roi_heads.box_predictor.bbox_pred.{0}"),
    (r"^roi_head\.mask_head\.convs\.(\d)\.conv\.(weight|bias)$", "roi_heads.mask_head.mask_fcn{N0}.{1}"),
    (rf"^roi_head\.mask_head\.convs\.(\d)\.{_NORM}\.{_LEAF}$", "roi_heads.mask_head.mask_fcn{N0}.norm.{1}"),
    (r"^roi_head\.mask_head\.upsample\.(weight|bias)$", "roi_heads.mask_head.deconv.{0}"),
    (r"^roi_head\.mask_head\.conv_logits\.(weight|bias)$", "roi_heads.mask_head.predictor.{0}"),
]
_COMPILED = [(re.compile(p), t) for p, t in _RULES]


def looks_mmdet(keys: List[str]) -> bool:
    """An mmdetection detector: `backbone.layer1.*` with an mmdet neck or heads."""
    return any(k.startswith("backbone.layer1.") for k in keys) and any(
        k.startswith(("neck.", "rpn_head.", "roi_head.", "bbox_head.")) for k in keys
    )


def _rename(key: str, bp: str) -> Optional[str]:
    for pattern, template in _COMPILED:
        m = pattern.match(key)
        if m:
            g = m.groups()
            first = int(g[0]) if g and g[0].isdigit() else 0  # layer / level / layer index of the rule
            return template.format(*g, bp=bp, S0=first + 1, P0=first + 2, N0=first + 1)
    return None


def _check_layout(keys: List[str], meta: Dict[str, Any]) -> None:
    version = str(meta.get("mmdet_version", "")) if isinstance(meta, dict) else ""
    if version.startswith("1.") or any(k.startswith(("bbox_head.", "mask_head.")) for k in keys):
        raise MMDetLayoutError(
            "mmdetection 1.x checkpoint (heads outside roi_head, background as class 0, +1 in box sizes): "
            "convert it with mmdetection's tools/model_converters/upgrade_model_version.py first"
        )
    if any(re.match(r"^roi_head\.(bbox_head|mask_head)\.\d+\.", k) for k in keys):
        raise MMDetLayoutError(
            "mmdetection Cascade checkpoint: it has one mask head per stage and detgn's Cascade (like "
            "detectron2's) has one; detgn loads mmdetection's Mask / Faster R-CNN layouts only"
        )
    if any(".conv_offset." in k or ".conv2.conv_offset" in k for k in keys):
        raise MMDetLayoutError(
            "mmdetection checkpoint with deformable convolutions (conv2.conv_offset): its offset layout is "
            "not mapped to detgn's conv2_offset; only non-deformable mmdetection layouts load"
        )
    if any(k.startswith("backbone.stem.") for k in keys):
        raise MMDetLayoutError(
            "mmdetection ResNet with a deep stem (ResNetV1c/V1d, backbone.stem.*): detgn's stem is one 7x7 conv"
        )


def mmdet_names_to_detgn(
    sd: Dict[str, Any], backbone_prefix: str, meta: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """Rename an mmdetection state dict. num_batches_tracked is dropped; names without a rule keep their
    name (reported as unused). Raises MMDetLayoutError for layouts that would load wrongly."""
    keys = list(sd)
    _check_layout(keys, meta or {})
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        new = _rename(k, backbone_prefix)
        out[new if new is not None else k] = v
    return out


class MMDetConverter(WeightsConverter):
    name = "mmdet"
    note = (
        "mmdetection weights: its GN configs expect BGR input with PIXEL_MEAN [103.53, 116.28, 123.675] and "
        "PIXEL_STD [1, 1, 1], its GN+WS and BN configs RGB with [123.675, 116.28, 103.53] / [58.395, 57.12, "
        "57.375]; see configs/mmdet/ and docs/weights.md"
    )

    def looks_like(self, obj):
        from . import state_of

        return not ("model" in obj and isinstance(obj["model"], dict)) and looks_mmdet(list(state_of(obj)))

    def convert(self, obj, backbone_prefix):
        from . import tensorize

        sd = obj.get("state_dict", obj)
        meta = obj.get("meta") if "state_dict" in obj else None
        return {"model": tensorize(mmdet_names_to_detgn(sd, backbone_prefix, meta))}
