"""Recognise a weights file's format from its content and convert it to detgn parameter names.

Formats:
  detgn       {"model": tensors, "optimizer", "scheduler", "iteration", ...}  (loads as is)
  detectron2  .pth state dicts or .pkl {"model": numpy arrays, "__author__": ...} (same names)
  caffe2      Detectron pickles, {"blobs": {...}} or flat: conv1_w, res2_0_branch2a_gn_s, fpn_*,
              rpn_*, head_conv*, fc6, cls_score, bbox_pred, _[mask]_fcn* / _mask_fcn* (GN), conv5_mask, mask_fcn_logits
  torchvision torchvision / timm ResNet state dicts: conv1.weight, bn1.*, layerX.Y.convZ/bnZ, downsample.0/1
              (also mmdetection's ImageNet ResNets with GN: gn1.*, layerX.Y.gnZ.*)
  mmdet       mmdetection 2.x / 3.x detectors {"meta", "state_dict"}: backbone.layerX, neck.*, rpn_head.*, roi_head.*
              (mmdet_names.py)
"""

import logging
import pickle
import os
import re
from typing import Any, Dict, Optional

import numpy as np
import torch

from detgn.utils.errors import UserInputError

from .mmdet_names import looks_mmdet, mmdet_names_to_detgn

__all__ = [
    "UnsafePickleError",
    "WeightsFormatError",
    "load_any_file",
    "convert_to_detgn",
    "detect_format",
    "c2_names_to_detgn",
    "torchvision_names_to_detgn",
    "detgn_names_to_torchvision",
]

logger = logging.getLogger(__name__)


class WeightsFormatError(UserInputError, ValueError):
    """A weights file that is neither a torch checkpoint nor a (numpy) pickle, or holds no state dict."""


class UnsafePickleError(UserInputError, ValueError):
    """A weights pickle asks for a Python global outside the numpy/container allow-list."""


# Everything a Detectron (Python 2, protocol 2) or detectron2 .pkl needs: numpy arrays, dtypes and
# scalars, and plain containers. Any other global (os.system, builtins.eval, ...) is refused.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes written by Python 3 with protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f, filename):
        super().__init__(f, encoding="latin1")
        self._filename = filename

    def find_class(self, module, name):
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):  # numpy >= 1.25 dtype classes
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"Refusing to load {self._filename}: it asks for the Python global '{module}.{name}', which a "
            "weights file does not need (only numpy arrays and plain containers are allowed); "
            "loading it could run code. Convert trusted weights with a plain torch.save of tensors"
        )


def _safe_unpickle(filename: str) -> Any:
    with open(filename, "rb") as f:
        return _RestrictedUnpickler(f, filename).load()


def load_any_file(filename: str) -> Any:
    """torch.load(weights_only=True) for torch files; a restricted latin1 unpickler for Detectron/detectron2 .pkl.

    Neither path runs code from the file: a pickle that needs anything but numpy arrays, dtypes
    and plain containers raises UnsafePickleError naming the file and the refused global.
    """
    import warnings
    import zipfile

    try:
        size = os.path.getsize(filename)
    except OSError as e:
        raise WeightsFormatError(f"Cannot read weights file {filename}: {e.strerror}") from None
    if size == 0:
        raise WeightsFormatError(
            f"Weights file {filename} is empty (0 bytes), e.g. an interrupted download or copy; fetch it again"
        )
    with open(filename, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04" or zipfile.is_zipfile(filename)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # plain pickles trigger a protocol warning before failing over
            return torch.load(filename, map_location="cpu", weights_only=True)
    except Exception as torch_error:  # not a (safe) torch file: try the restricted pickle reader
        refused = _refused_global(str(torch_error))
        if (
            refused and not is_zip
        ):  # a plain pickle (Detectron .pkl) or a legacy torch file, whose first pickle is a magic number
            try:
                obj = _safe_unpickle(filename)
            except UnsafePickleError:
                raise
            except Exception:
                obj = None
            if obj is not None and obj != _LEGACY_TORCH_MAGIC:
                return obj
        if refused:
            kind = "torch checkpoint (zip)" if is_zip else "legacy torch checkpoint"
            raise UnsafePickleError(
                f"Refusing to load {filename}: this {kind} asks for the Python global '{refused}', which "
                "weights do not need; loading it could run code. Re-save trusted weights as a plain state "
                "dict of tensors (torch.save(model.state_dict(), path))"
            ) from None
        if is_zip:
            raise WeightsFormatError(
                f"Cannot read weights file {filename}: a torch checkpoint (zip) that torch cannot open "
                f"({_first_sentence(str(torch_error))}); the file is probably truncated or corrupted: "
                "fetch or copy it again"
            ) from None
        try:
            return _safe_unpickle(filename)
        except UnsafePickleError:
            raise
        except Exception as pickle_error:
            raise WeightsFormatError(
                f"Cannot read weights file {filename}: it is neither a torch checkpoint nor a numpy pickle "
                f"({type(pickle_error).__name__}: {_first_sentence(str(pickle_error))}); check the path, or "
                "fetch the file again if it was cut short"
            ) from None


_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of a torch file saved without the zip format


def _refused_global(message: str) -> Optional[str]:
    """The global torch's weights_only unpickler refused, from its error message (None if it was not that)."""
    m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", message)
    return m.group(1) if m else None


def _first_sentence(message: str) -> str:
    """The first line of an error, without torch's advice about weights_only=False (never an option here)."""
    line = next(
        (l for l in message.splitlines() if l.strip() and "weights_only" not in l),
        message.splitlines()[0] if message else "",
    )
    return line.split(". This is an internal")[0].strip().rstrip(".")


def _model_prefix(model_keys, suffix: str) -> Optional[str]:
    for k in model_keys:
        if k.endswith(suffix):
            return k[: -len(suffix)]
    return None


def _check_containers(obj: Any, source: str) -> None:
    """The dicts the formats read tensors from ('model', 'state_dict', 'blobs', or the file itself) must be dicts
    keyed by names: a list or a string there is a file of another kind, refused in one line."""
    where = source or "the weights file"
    if not isinstance(obj, dict):
        raise WeightsFormatError(
            f"{where} holds a {type(obj).__name__}, not a dict of named tensors; not a weights file"
        )
    for key in ("model", "state_dict", "blobs"):
        if key in obj and not isinstance(obj[key], dict):
            raise WeightsFormatError(
                f"{where}: its '{key}' entry is a {type(obj[key]).__name__}, not a dict of named tensors; not a weights "
                "file detgn can read (a detectron2 .pkl holds {'model': {name: array}})"
            )
    tensors = next((obj[k] for k in ("model", "state_dict", "blobs") if k in obj), obj)
    bad = next((k for k in tensors if not isinstance(k, str)), None)
    if bad is not None:
        raise WeightsFormatError(
            f"{where}: tensor names must be strings, found the key {bad!r} ({type(bad).__name__}); not a weights file"
        )


def detect_format(obj: Any) -> str:
    if not isinstance(obj, dict):
        raise WeightsFormatError(f"Unsupported weights object of type {type(obj).__name__}; expected a dict")
    if "blobs" in obj:
        return "caffe2"
    if "model" in obj and isinstance(obj["model"], dict):
        keys = list(obj["model"].keys())
        if _looks_caffe2(keys):
            return "caffe2"
        if "__author__" in obj or any(isinstance(v, np.ndarray) for v in obj["model"].values()):
            return "detectron2"
        return "detgn"
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return detect_format(obj["state_dict"])
    keys = list(obj.keys())
    if looks_mmdet(keys):
        return "mmdet"
    if _looks_caffe2(keys):
        return "caffe2"
    if _looks_torchvision(keys):
        return "torchvision"
    return "detectron2"


def _looks_caffe2(keys) -> bool:
    return any(k in ("conv1_w", "res_conv1_bn_s", "conv1_gn_s") or re.match(r"res\d+_\d+_branch", k) for k in keys)


def _looks_torchvision(keys) -> bool:
    return "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys)


def _tensorize(d: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, torch.Tensor):
            out[k] = v
    return out


# ------------------------------------------------------------------------------ caffe2 names


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


FORMATS = ("detgn", "detectron2", "caffe2", "torchvision", "mmdet")


def convert_to_detgn(
    obj: Any, model_state_dict: Dict[str, torch.Tensor], source: str = "", fmt: Optional[str] = None
) -> Dict[str, Any]:
    """-> {"model": detgn-named tensors, "format": name, ...other checkpoint entries (detgn format)}.
    `fmt` (one of FORMATS) overrides the format recognised from the content."""
    _check_containers(obj, source)
    detected = detect_format(obj)
    if fmt is not None and fmt not in FORMATS:
        raise WeightsFormatError(f"unknown weights format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if fmt == "mmdet" and detected != "mmdet":
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else {}
        raise WeightsFormatError(
            f"{source or 'the weights file'} is not an mmdetection detector (no backbone.layer1.* with "
            f"neck.* / rpn_head.* / roi_head.* keys; first keys: {', '.join(list(sd)[:3])}); "
            f"its content looks like '{detected}'"
        )
    fmt = fmt or detected
    prefix = _model_prefix(model_state_dict.keys(), "stem.conv1.weight") or ""
    if fmt == "detgn":
        out = dict(obj)
        out["model"] = _tensorize(obj["model"])
    elif fmt == "detectron2":
        sd = obj["model"] if "model" in obj else obj.get("state_dict", obj)
        out = {"model": _tensorize(sd)}
        for k in ("iteration",):
            if k in obj and "model" in obj:
                out["source_iteration"] = obj[k]
    elif fmt == "caffe2":
        blobs = obj.get("blobs", obj.get("model", obj))
        out = {"model": _tensorize(c2_names_to_detgn(blobs, prefix))}
    elif fmt == "mmdet":
        sd = obj.get("state_dict", obj)
        out = {"model": _tensorize(mmdet_names_to_detgn(sd, prefix, obj.get("meta") if "state_dict" in obj else None))}
        logger.info(
            "mmdetection weights: its GN configs expect BGR input with PIXEL_MEAN [103.53, 116.28, 123.675] and "
            "PIXEL_STD [1, 1, 1], its GN+WS and BN configs RGB with [123.675, 116.28, 103.53] / [58.395, 57.12, "
            "57.375]; see configs/mmdet/ and docs/weights.md"
        )
    else:
        sd = obj.get("state_dict", obj)
        out = {"model": _tensorize(torchvision_names_to_detgn(sd, prefix))}
        logger.info(
            "torchvision/timm ResNet weights expect RGB input with ImageNet mean/std and the stride in the 3x3: "
            "INPUT.FORMAT RGB, PIXEL_MEAN [123.675, 116.28, 103.53], PIXEL_STD [58.395, 57.12, 57.375], STRIDE_IN_1X1 False"
        )
    out["format"] = fmt
    return out
