"""Weights converters: one module per foreign format, each a WeightsConverter with `looks_like(obj)` (is this file's
content mine?) and `convert(obj, backbone_prefix)` (-> {"model": detgn-named tensors, ...}), chosen from the table
CONVERTERS in order; detectron2's layout (detgn's own names) is the fallback. A new format is one module with one
converter, added with register_converter().

    detgn       {"model": tensors, "optimizer", "scheduler", "iteration", ...}  (loads as is)       detectron2.py
    detectron2  .pth state dicts or .pkl {"model": numpy arrays, "__author__": ...} (same names)   detectron2.py
    caffe2      Detectron pickles, {"blobs": {...}} or flat: conv1_w, res2_0_branch2a_gn_s, ...    caffe2.py
    torchvision torchvision / timm / mmdetection ImageNet ResNets: conv1.weight, layerX.Y.convZ    torchvision.py
    mmdet       mmdetection 2.x / 3.x detectors {"meta", "state_dict"}: backbone.*, neck.*, ...      mmdet.py
"""

from typing import Any, Dict, List, Optional

import numpy as np
import torch

__all__ = [
    "WeightsConverter",
    "CONVERTERS",
    "register_converter",
    "unregister_converter",
    "get_converter",
    "detect_format",
    "tensorize",
    "state_of",
]


class WeightsConverter:
    """One weights format. `name` is what `--format` / `fmt=` call it; `looks_like(obj)` says whether a loaded file
    (a dict) is of this format; `convert(obj, backbone_prefix)` returns {"model": {detgn name: tensor}, ...other
    checkpoint entries}, where backbone_prefix is where the ResNet lives in the model ("backbone.bottom_up.");
    `note` is logged once when a file of this format is converted (what input it expects)."""

    name: str = ""
    note: str = ""

    def looks_like(self, obj: Dict[str, Any]) -> bool:
        raise NotImplementedError

    def convert(self, obj: Dict[str, Any], backbone_prefix: str) -> Dict[str, Any]:
        raise NotImplementedError


def state_of(obj: Dict[str, Any]) -> Dict[str, Any]:
    """The dict of named tensors a file holds: 'blobs', 'model', 'state_dict' (nested too) or the file itself."""
    if "blobs" in obj and isinstance(obj["blobs"], dict):
        return obj["blobs"]
    if "model" in obj and isinstance(obj["model"], dict):
        return obj["model"]
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return state_of(obj["state_dict"])
    return obj


def tensorize(d: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Numpy arrays -> tensors; entries that are neither are left out."""
    out = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, torch.Tensor):
            out[k] = v
    return out


CONVERTERS: List[WeightsConverter] = []


def register_converter(converter: WeightsConverter, first: bool = False) -> WeightsConverter:
    """Add a format to the table (before the built-in ones with first=True, else after them); its name must be new."""
    if any(c.name == converter.name for c in CONVERTERS):
        raise ValueError(f"a weights format named '{converter.name}' is already registered")
    if first:
        CONVERTERS.insert(0, converter)
    else:
        CONVERTERS.append(converter)
    return converter


def unregister_converter(name: str) -> None:
    CONVERTERS[:] = [c for c in CONVERTERS if c.name != name]


def get_converter(name: str) -> Optional[WeightsConverter]:
    return next((c for c in CONVERTERS if c.name == name), None)


def detect_format(obj: Any) -> str:
    """The name of the first converter whose looks_like accepts `obj`; "detectron2" (detgn's own names) when none does."""
    from ..errors import WeightsFormatError

    if not isinstance(obj, dict):
        raise WeightsFormatError(f"Unsupported weights object of type {type(obj).__name__}; expected a dict")
    for c in CONVERTERS:
        if c.looks_like(obj):
            return c.name
    return "detectron2"


def _register_builtin():
    from .caffe2 import Caffe2Converter
    from .detectron2 import Detectron2Converter, DetgnConverter
    from .mmdet import MMDetConverter
    from .torchvision import TorchvisionConverter

    # the order decides: Caffe2 blobs first (a Detectron file may also hold "model"), then the layouts whose names
    # are unmistakable, then detgn's own checkpoints, and detectron2 as the fallback
    for c in (Caffe2Converter(), MMDetConverter(), TorchvisionConverter(), DetgnConverter(), Detectron2Converter()):
        register_converter(c)


_register_builtin()
