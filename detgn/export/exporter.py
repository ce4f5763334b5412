"""Export a built GN Mask R-CNN to TorchScript or ONNX, with its metadata, a sample input and a README.

Both formats come from one trace of detgn.export.wrapper.ExportableModel (torch.jit.trace; ONNX
through PyTorch's TorchScript-based exporter, which converts that trace). Tracing keeps the
data-dependent parts of detection (top-k, score filtering, NMS, per-level ROIAlign) as graph
operations, and the height and width of the input stay symbolic: one export serves every image
size (tests check a second size against eager detgn).

GroupNorm in ONNX: with --opset 21 or later each GN layer is one GroupNormalization node (opset 21
defines it with PyTorch's per-channel scale and bias). Below 21 (the default is 17) it is written as
its decomposition, Reshape(N, G, -1) -> InstanceNormalization -> Reshape -> Mul/Add: opset 18's
GroupNormalization takes per-group scale and bias, which is not PyTorch's function, and the
decomposition is exact with operators every runtime has had since opset 1. Both give the same
detections; on ONNX Runtime 1.32 (CPU) they run equally fast (four 256-channel conv+GN+ReLU blocks
at 100x136: 0.203 s decomposed vs 0.211 s native), so the default stays 17, which older runtimes
and converters also read.

Output folder: model.onnx or model.ts, detgn_export.json (what the predictors need: input format,
test-time resize, and the inference settings traced into the graph), sample_input.png (the
image the export was checked on) and README.md (how to call the model).
"""

import json
import os
import shutil
import tempfile
import warnings
from typing import Dict, Optional

import numpy as np
import torch

from detgn.config.config import get_key
from detgn.layers.norm import gn_groups
from detgn.utils.errors import UserInputError

from .postprocess import resize_for_model
from .wrapper import OUTPUT_NAMES, ExportableModel

__all__ = ["ExportError", "check_exportable", "export_model", "FORMATS", "MODEL_FILES", "META_FILE", "BAKED_KEYS"]

FORMATS = ("torchscript", "onnx")
MODEL_FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}
META_FILE = "detgn_export.json"
MIN_OPSET = 16  # ONNX RoiAlign with half-pixel coordinates (ROIAlignV2)

# components whose inference path is written to trace into a size-generic graph (and is tested)
_SUPPORTED = {
    "MODEL.META_ARCHITECTURE": ("GeneralizedRCNN",),
    "INPUT.RESIZE_LIBRARY": ("opencv",),  # the exported model's resize_for_model resizes with OpenCV
    "MODEL.BACKBONE.NAME": ("build_resnet_fpn_backbone", "build_resnet_backbone"),
    "MODEL.PROPOSAL_GENERATOR.NAME": ("RPN",),
    "MODEL.RPN.HEAD_NAME": ("StandardRPNHead",),
    "MODEL.ANCHOR_GENERATOR.NAME": ("DefaultAnchorGenerator",),
    "MODEL.ROI_HEADS.NAME": ("StandardROIHeads",),
    "MODEL.ROI_BOX_HEAD.NAME": ("FastRCNNConvFCHead",),
    "MODEL.ROI_MASK_HEAD.NAME": ("MaskRCNNConvUpsampleHead",),
    "MODEL.RESNETS.NORM": ("GN", "FrozenBN", "BN", ""),
    "MODEL.FPN.NORM": ("GN", "BN", ""),
    "MODEL.ROI_BOX_HEAD.NORM": ("GN", "BN", ""),
    "MODEL.ROI_MASK_HEAD.NORM": ("GN", "BN", ""),
}
_NORM_HINT = "SyncBN/NaiveSyncBN layers compute BN at inference: export with the same weights and NORM BN"

# inference settings that become constants of the exported graph; recorded in detgn_export.json
BAKED_KEYS = (
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "MODEL.ROI_HEADS.NMS_THRESH_TEST",
    "TEST.DETECTIONS_PER_IMAGE",
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "MODEL.RPN.NMS_THRESH",
    "MODEL.ROI_HEADS.NUM_CLASSES",
    "MODEL.MASK_ON",
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
)


class ExportError(UserInputError, ValueError):
    """A config, format or option the exporter cannot handle; nothing has been written."""


def _group_norm_21(g, input, num_groups, weight, bias, eps, cudnn_enabled):
    """aten::group_norm -> ONNX GroupNormalization-21 (per-channel scale and bias; detgn's GN is always affine)."""
    from torch.onnx import symbolic_helper

    return g.op(
        "GroupNormalization",
        input,
        weight,
        bias,
        num_groups_i=symbolic_helper._get_const(num_groups, "i", "num_groups"),
        epsilon_f=symbolic_helper._get_const(eps, "f", "eps"),
    )


def _onnx_export(wrapper, x, path, opset):
    dyn = {"image": {1: "height", 2: "width"}, **{n: {0: "detections"} for n in OUTPUT_NAMES}}
    native_gn = opset >= 21
    if native_gn:
        torch.onnx.register_custom_op_symbolic("aten::group_norm", _group_norm_21, 21)
    try:
        torch.onnx.export(
            wrapper,
            (x,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=OUTPUT_NAMES,
            dynamic_axes=dyn,
        )
    finally:
        if native_gn:
            torch.onnx.unregister_custom_op_symbolic("aten::group_norm", 21)


def check_exportable(cfg, fmt: str = "onnx", opset: int = 17) -> None:
    """Raise ExportError naming the first setting the exporter does not handle."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx" and opset < MIN_OPSET:
        raise ExportError(
            f"--opset {opset}: ROIAlign with aligned (half-pixel) sampling needs ONNX opset >= {MIN_OPSET}"
        )
    if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN":
        raise ExportError(
            "MODEL.META_ARCHITECTURE 'PanopticFPN' cannot be exported: the exported graph has detection outputs only; "
            "its semantic logits and the panoptic combination (a loop over detections that depends on their scores "
            "and overlaps) are not written for tracing; run it in PyTorch (tools/train_net.py --eval-only, tools/demo.py)"
        )
    for key, allowed in _SUPPORTED.items():
        value = get_key(cfg, key)
        if key.endswith(".NORM") and key.startswith("MODEL.ROI_MASK_HEAD") and not cfg.MODEL.MASK_ON:
            continue
        if key.endswith(".NORM") and gn_groups(value):  # "GN(G)": a GroupNorm like "GN", with its own groups
            value = "GN"
        if value not in allowed:
            hint = f"; {_NORM_HINT}" if key.endswith(".NORM") and "SyncBN" in str(value) else ""
            shown = "'' (none)" if "" in allowed else ""
            choices = ", ".join(a for a in allowed if a) + (f" or {shown}" if shown else "")
            raise ExportError(f"{key} {value!r} cannot be exported: the exporter handles {choices}{hint}")
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
        raise ExportError(
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE {list(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE)} cannot be exported: "
            "torch's ONNX exporter has no conversion for torchvision's deform_conv2d and the exporter's "
            "traced graphs are tested without it; run the model in PyTorch (tools/train_net.py --eval-only)"
        )
    if cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST >= 1.0 or cfg.TEST.DETECTIONS_PER_IMAGE <= 0:
        raise ExportError("MODEL.ROI_HEADS.NMS_THRESH_TEST must be < 1 and TEST.DETECTIONS_PER_IMAGE > 0 for export")


def _metadata(cfg, fmt: str, opset: Optional[int], sample_hw, thing_classes) -> Dict:
    import detgn

    return {
        "format": fmt,
        "model_file": MODEL_FILES[fmt],
        "opset": opset if fmt == "onnx" else None,
        "input": {
            "name": "image",
            "layout": "CHW",
            "dtype": "uint8",
            "channels": cfg.INPUT.FORMAT,
            "resize": {"min_size_test": int(cfg.INPUT.MIN_SIZE_TEST), "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST)},
        },
        "outputs": OUTPUT_NAMES,
        "mask_threshold": 0.5,
        "baked": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k in BAKED_KEYS for v in [get_key(cfg, k)]},
        "weights": os.path.basename(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else "",
        "thing_classes": list(thing_classes) if thing_classes else None,
        "sample_input": {"file": "sample_input.png", "height": sample_hw[0], "width": sample_hw[1]},
        "detgn_version": detgn.__version__,
        "torch_version": torch.__version__,
    }


_README = """# detgn exported model ({fmt})

`{model_file}`: GN Mask R-CNN exported by detgn {version} from `{weights}`.
Input `image`: (3, H, W) uint8, channels {channels}, the original image resized so that its short
side is {min_size} (long side at most {max_size}). Outputs: `boxes` (R, 4) XYXY in input pixels,
`scores` (R,), `classes` (R,) int64, `mask_probs` (R, 28, 28) to paste into each box.
Score threshold, NMS and detections per image are part of the graph: see `detgn_export.json`.

With detgn's predictor (resize, run, boxes at the original size, pasted masks):

```python
import cv2
from detgn.export import {predictor}

predictor = {predictor}("{folder}/{model_file}")
det = predictor(cv2.imread("{folder}/sample_input.png"))  # BGR uint8
print(det["boxes"].shape, det["scores"], det["classes"], det["masks"].shape)
```

{raw}
"""

_RAW = {
    "onnx": """The bare graph with ONNX Runtime only (no detgn, no PyTorch):

```python
import cv2, numpy as np, onnxruntime as ort
sess = ort.InferenceSession("{folder}/model.onnx", providers=["CPUExecutionProvider"])
img = cv2.imread("{folder}/sample_input.png"){to_rgb}  # already at the model's input size
boxes, scores, classes, mask_probs = sess.run(None, {{"image": np.ascontiguousarray(img.transpose(2, 0, 1))}})
```""",
    "torchscript": """The bare graph with PyTorch only (torchvision must be imported: it registers ROIAlign and NMS):

```python
import cv2, torch, torchvision
model = torch.jit.load("{folder}/model.ts")
img = cv2.imread("{folder}/sample_input.png"){to_rgb}  # already at the model's input size
boxes, scores, classes, mask_probs = model(torch.from_numpy(img.transpose(2, 0, 1).copy()))
```""",
}


def check_export_output(output_dir: str, fmt: str, overwrite: bool = False) -> None:
    """ExportError when `output_dir` is a file, or holds a file the export would replace (model, metadata,
    sample_input.png, README.md) and `overwrite` is False: an export never writes over files silently."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ExportError(f"--output {output_dir} is a file; give a folder")
    names = (MODEL_FILES[fmt], META_FILE, "sample_input.png", "README.md")
    taken = [n for n in names if os.path.exists(os.path.join(output_dir, n))]
    if taken and not overwrite:
        raise ExportError(
            f"--output {output_dir} already holds {', '.join(taken)}; choose an empty folder, or pass --overwrite "
            f"to replace those files"
        )


def export_model(
    cfg,
    model: torch.nn.Module,
    *,
    fmt: str,
    output_dir: str,
    sample_image: np.ndarray,
    opset: int = 17,
    thing_classes=None,
    overwrite: bool = False,
) -> Dict[str, str]:
    """Trace `model` (built from `cfg`, weights loaded) and write the export folder.

    Args:
        sample_image: (H, W, 3) uint8 BGR image at its original size; resized by the test-time
            rule, it is the tracing input and is written as sample_input.png.
    Returns:
        {"model": path, "meta": path, "sample": path, "readme": path}.
    Existing export files in `output_dir` are refused unless `overwrite` (check_export_output).
    Nothing is written when a check fails: files are made in a temporary folder beside
    `output_dir` and moved in at the end.
    """
    check_exportable(cfg, fmt, opset)
    check_export_output(output_dir, fmt, overwrite)
    x_np = resize_for_model(sample_image, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.FORMAT)
    x = torch.from_numpy(x_np)
    wrapper = ExportableModel(model.cpu() if model.pixel_mean.device.type != "cpu" else model)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".detgn_export_", dir=parent)
    try:
        model_path = os.path.join(tmp, MODEL_FILES[fmt])
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.trace's deprecation notice
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            # detgn indexes with non-negative indices only, the case this exporter note says is exact
            warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
            if fmt == "torchscript":
                traced = torch.jit.trace(wrapper, (x,), check_trace=False)
                traced.save(model_path)
            else:
                _onnx_export(wrapper, x, model_path, opset)
        import cv2

        img = x_np.transpose(1, 2, 0)
        cv2.imwrite(os.path.join(tmp, "sample_input.png"), img[:, :, ::-1] if cfg.INPUT.FORMAT == "RGB" else img)
        meta = _metadata(cfg, fmt, opset, x_np.shape[1:], thing_classes)
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=2)
        folder = output_dir.rstrip("/")
        to_rgb = "[:, :, ::-1]" if cfg.INPUT.FORMAT == "RGB" else ""
        readme = _README.format(
            fmt=fmt,
            model_file=MODEL_FILES[fmt],
            version=meta["detgn_version"],
            weights=meta["weights"] or "(no weights)",
            channels=cfg.INPUT.FORMAT,
            min_size=cfg.INPUT.MIN_SIZE_TEST,
            max_size=cfg.INPUT.MAX_SIZE_TEST,
            predictor="OnnxPredictor" if fmt == "onnx" else "TorchScriptPredictor",
            folder=folder,
            raw=_RAW[fmt].format(folder=folder, to_rgb=to_rgb),
        )
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write(readme)
        os.makedirs(output_dir, exist_ok=True)
        out = {}
        for key, name in (
            ("model", MODEL_FILES[fmt]),
            ("meta", META_FILE),
            ("sample", "sample_input.png"),
            ("readme", "README.md"),
        ):
            dst = os.path.join(output_dir, name)
            os.replace(os.path.join(tmp, name), dst)
            out[key] = dst
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
