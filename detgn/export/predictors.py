"""Predictors for exported models: one BGR image in, detections at its original size out.

    OnnxPredictor("export/model.onnx")(image_bgr)      # ONNX Runtime; imports neither torch nor detgn's training stack
    TorchScriptPredictor("export/model.ts")(image_bgr)  # PyTorch + torchvision, no detgn modelling code

Both read detgn_export.json beside the model (input format, test-time resize) and return
{"boxes": (R, 4) float32 XYXY, "scores": (R,), "classes": (R,) int64, "masks": (R, H, W) bool}
at the original (H, W), with DefaultPredictor's pre- and post-processing (detgn.export.postprocess).
"""

import json
import os
import warnings
from typing import Dict, Optional

import numpy as np

from detgn.utils.errors import UserInputError

from .postprocess import resize_for_model, to_original_size

__all__ = [
    "OnnxPredictor",
    "TorchScriptPredictor",
    "read_export_metadata",
    "check_config_matches",
    "ExportedModelError",
    "ExportedModelNotFoundError",
    "to_instances",
]


class ExportedModelNotFoundError(UserInputError, FileNotFoundError):
    """The exported model file or the detgn_export.json beside it is missing."""


class ExportedModelError(UserInputError, ValueError):
    """A config that asks an exported model for settings its graph does not have."""


_META_FILE = "detgn_export.json"  # = exporter.META_FILE (the exporter imports torch; this module must not)


def read_export_metadata(model_path: str) -> Dict:
    """detgn_export.json beside `model_path`; a one-line error names what is missing."""
    if not os.path.isfile(model_path):
        raise ExportedModelNotFoundError(f"Exported model not found: {model_path}")
    meta_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), _META_FILE)
    if not os.path.isfile(meta_path):
        raise ExportedModelNotFoundError(f"{meta_path} not found: keep the files tools/export_model.py wrote together")
    with open(meta_path) as f:
        return json.load(f)


def check_config_matches(meta: Dict, cfg) -> None:
    """Refuse a config whose inference settings differ from those traced into the exported graph."""
    for key, exported in meta["baked"].items():
        node = cfg
        for k in key.split("."):
            node = node[k]
        value = list(node) if isinstance(node, (list, tuple)) else node
        if value != exported:
            raise ExportedModelError(
                f"{key} {value} differs from the exported model's {exported} (part of its graph); "
                f"export again with this config or drop the override"
            )


class _ExportedPredictor:
    def __init__(self, model_path: str, min_size: Optional[int] = None, max_size: Optional[int] = None):
        self.meta = read_export_metadata(model_path)
        resize = self.meta["input"]["resize"]
        self.min_size = int(min_size if min_size is not None else resize["min_size_test"])
        self.max_size = int(max_size if max_size is not None else resize["max_size_test"])
        self.input_format = self.meta["input"]["channels"]
        self.mask_threshold = float(self.meta["mask_threshold"])

    def _run(self, image_chw: np.ndarray):
        raise NotImplementedError

    def __call__(self, image_bgr: np.ndarray) -> Dict[str, np.ndarray]:
        x = resize_for_model(image_bgr, self.min_size, self.max_size, self.input_format)
        boxes, scores, classes, mask_probs = self._run(x)
        return to_original_size(
            boxes, scores, classes, mask_probs, x.shape[1:], image_bgr.shape[:2], self.mask_threshold
        )


class OnnxPredictor(_ExportedPredictor):
    """ONNX Runtime session over model.onnx (CPU by default; `providers` as onnxruntime takes them)."""

    def __init__(self, model_path: str, providers=None, num_threads: Optional[int] = None, **kwargs):
        super().__init__(model_path, **kwargs)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("onnxruntime is not installed: pip install 'detgn[export]' (or onnxruntime)") from e
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(
            model_path, sess_options=opts, providers=providers or ["CPUExecutionProvider"]
        )

    def _run(self, image_chw):
        return self.session.run(None, {"image": image_chw})


class TorchScriptPredictor(_ExportedPredictor):
    """torch.jit.load of model.ts on the CPU (torchvision is imported for its ROIAlign and NMS ops)."""

    def __init__(self, model_path: str, **kwargs):
        super().__init__(model_path, **kwargs)
        import torch
        import torchvision  # noqa: F401  (registers torchvision::roi_align and torchvision::nms)

        self._torch = torch
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch's TorchScript deprecation notice
            self.model = torch.jit.load(model_path, map_location="cpu")

    def _run(self, image_chw):
        with self._torch.no_grad():
            return [t.numpy() for t in self.model(self._torch.from_numpy(image_chw))]


def to_instances(det: Dict[str, np.ndarray], image_size):
    """A predictor's dict of arrays -> detgn Instances (pred_boxes, scores, pred_classes[, pred_masks]) of (h, w)."""
    import torch

    from detgn.structures import Boxes, Instances

    inst = Instances(tuple(image_size))
    inst.pred_boxes = Boxes(torch.from_numpy(det["boxes"]))
    inst.scores = torch.from_numpy(det["scores"])
    inst.pred_classes = torch.from_numpy(det["classes"])
    if "masks" in det:
        inst.pred_masks = torch.from_numpy(det["masks"])
    return inst
