"""torchvision / timm ResNet state dicts (conv1.weight, bn1.*, layerX.Y.convZ/bnZ, downsample.0/1), also mmdetection's
ImageNet ResNets with GN (gn1.*, layerX.Y.gnZ.*), renamed to detgn's backbone names by one table, both ways."""

import re
from typing import Any, Dict, Optional

from . import WeightsConverter, state_of, tensorize

__all__ = ["TorchvisionConverter", "torchvision_names_to_detgn", "detgn_names_to_torchvision", "looks_torchvision"]


def looks_torchvision(keys) -> bool:
    return "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys)


class TorchvisionConverter(WeightsConverter):
    name = "torchvision"
    note = (
        "torchvision/timm ResNet weights expect RGB input with ImageNet mean/std and the stride in the 3x3: "
        "INPUT.FORMAT RGB, PIXEL_MEAN [123.675, 116.28, 103.53], PIXEL_STD [58.395, 57.12, 57.375], STRIDE_IN_1X1 False"
    )

    def looks_like(self, obj):
        return not ("model" in obj and isinstance(obj["model"], dict)) and looks_torchvision(list(state_of(obj)))

    def convert(self, obj, backbone_prefix):
        return {"model": tensorize(torchvision_names_to_detgn(obj.get("state_dict", obj), backbone_prefix))}


# ------------------------------------------------------------------------------ torchvision names
# (torchvision name, detgn name under the backbone prefix): {L} is torchvision's layer index (1..4),
# {S} = L + 1 detgn's stage (res2..res5), {B} the block, {Z} the conv, {leaf} a norm tensor
_TV_NAME_PAIRS = [
    ("conv1.weight", "stem.conv1.weight"),
    ("bn1.{leaf}", "stem.conv1.norm.{leaf}"),
    ("layer{L}.{B}.conv{Z}.weight", "res{S}.{B}.conv{Z}.weight"),
    ("layer{L}.{B}.bn{Z}.{leaf}", "res{S}.{B}.conv{Z}.norm.{leaf}"),
    ("layer{L}.{B}.downsample.0.weight", "res{S}.{B}.shortcut.weight"),
    ("layer{L}.{B}.downsample.1.{leaf}", "res{S}.{B}.shortcut.norm.{leaf}"),
    # mmdetection / mmcv ImageNet ResNets with GN name their norms gnZ (read only; written back as bnZ)
    ("gn1.{leaf}", "stem.conv1.norm.{leaf}"),
    ("layer{L}.{B}.gn{Z}.{leaf}", "res{S}.{B}.conv{Z}.norm.{leaf}"),
]
_FIELDS = {"L": r"\d", "S": r"\d", "B": r"\d+", "Z": r"\d", "leaf": r"weight|bias|running_mean|running_var"}


def _pattern(template: str):
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ...
    return re.compile(
        "^" + "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_FIELDS[p]})" for i, p in enumerate(parts)) + "$"
    )


_TV_RULES = [(_pattern(tv), _pattern(d), tv, d) for tv, d in _TV_NAME_PAIRS]


def _rename(name: str, to_detgn: bool) -> Optional[str]:
    """One ResNet tensor name in the other naming, or None when it is not a ResNet tensor name."""
    for tv_re, d_re, tv, d in _TV_RULES:
        m = (tv_re if to_detgn else d_re).match(name)
        if m:
            g = m.groupdict()
            if "L" in g:
                g["S"] = str(int(g["L"]) + 1)
            elif "S" in g:
                g["L"] = str(int(g["S"]) - 1)
            return (d if to_detgn else tv).format(**g)
    return None


def torchvision_names_to_detgn(sd: Dict[str, Any], backbone_prefix: str) -> Dict[str, Any]:
    """Rename torchvision/timm ResNet keys to detgn's; num_batches_tracked is dropped, the classifier
    (`fc.*`) keeps its name and shows up as unused in the load report."""
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        target = _rename(k, to_detgn=True)
        out[backbone_prefix + target if target else k] = v  # an unknown name is reported as unused
    return out


def detgn_names_to_torchvision(sd: Dict[str, Any], backbone_prefix: str = "backbone.bottom_up.") -> Dict[str, Any]:
    """detgn ResNet tensors (`backbone_prefix` + stem/resN names) and a classifier's `fc.*` -> torchvision's
    ResNet names (conv1, bn1, layerX.Y.convZ/bnZ, downsample.0/1, fc), loadable with
    `torchvision.models.resnetNN(norm_layer=...)`. Other tensors (FPN, heads) have no torchvision name: ValueError."""
    out = {}
    for k, v in sd.items():
        target = (
            k
            if k.startswith("fc.")
            else _rename(k[len(backbone_prefix) :], to_detgn=False)
            if k.startswith(backbone_prefix)
            else None
        )
        if target is None:
            raise ValueError(f"{k} has no torchvision ResNet name")
        out[target] = v
    return out
