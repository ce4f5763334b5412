"""DefaultPredictor: one image in, detections at the image's size out (detectron2's name and contract)."""

import numpy as np
import torch

from detgn.checkpoint import DetectionCheckpointer
from detgn.data.transforms import ResizeShortestEdge
from detgn.modeling import build_model
from detgn.utils.errors import ConfigValueError

from .ema import uses_ema_weights
from .precision import resolve_inference_precision

__all__ = ["DefaultPredictor"]


class DefaultPredictor:
    """Build the model of `cfg`, load cfg.MODEL.WEIGHTS, and predict on single images.

        predictor = DefaultPredictor(cfg)
        outputs = predictor(cv2.imread("input.jpg"))   # {"instances": Instances at the image's size}

    Panoptic FPN's outputs also hold "sem_seg" ((C, H, W) scores) and "panoptic_seg" ((H, W) int32 segment ids,
    segments_info), as its forward gives them, on the CPU.

    The input is one HxWxC uint8 image in BGR order (as cv2.imread gives), converted to
    cfg.INPUT.FORMAT; the test-time resize (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST) is applied, and
    boxes and masks come back at the original height and width. bf16 autocast is used where the
    precision policy picks bf16 for this config and device (engine/precision.py). With MODEL_EMA.ENABLED the
    checkpoint's EMA weights are loaded (engine/ema.py; the log says so).
    """

    def __init__(self, cfg, allow_partial_weights: bool = False):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg).eval()
        if cfg.MODEL.WEIGHTS:  # weights that leave heads random are refused unless allow_partial_weights
            DetectionCheckpointer(self.model).load_for_inference(
                cfg.MODEL.WEIGHTS, allow_partial=allow_partial_weights, ema=uses_ema_weights(cfg)
            )
        self.aug = ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice", cfg.INPUT.RESIZE_LIBRARY
        )
        if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
            raise ConfigValueError(f"INPUT.FORMAT must be BGR or RGB, got '{cfg.INPUT.FORMAT}'")
        self.input_format = cfg.INPUT.FORMAT
        device = next(self.model.parameters()).device
        self.precision = resolve_inference_precision(cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.DTYPE, device.type)
        self.amp_dtype = self.precision.dtype
        self.device_type = device.type

    def __call__(self, original_image: np.ndarray) -> dict:
        """(H, W, 3) uint8 BGR -> {"instances": Instances(pred_boxes, scores, pred_classes, pred_masks)} on CPU
        (+ "sem_seg" and "panoptic_seg" for Panoptic FPN)."""
        if not (isinstance(original_image, np.ndarray) and original_image.ndim == 3 and original_image.shape[2] == 3):
            raise ValueError(
                f"DefaultPredictor takes one HxWx3 uint8 BGR image, got {type(original_image).__name__} "
                f"{getattr(original_image, 'shape', '')}"
            )
        image = original_image[:, :, ::-1] if self.input_format == "RGB" else original_image
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image, np.random.RandomState(0)).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        inputs = [{"image": tensor, "height": height, "width": width}]
        with (
            torch.no_grad(),
            torch.autocast(self.device_type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None),
        ):
            out = self.model(inputs)[0]
        result = {"instances": out["instances"].to("cpu")}
        if "sem_seg" in out:
            result["sem_seg"] = out["sem_seg"].float().cpu()
        if "panoptic_seg" in out:
            ids, segments = out["panoptic_seg"]
            result["panoptic_seg"] = (ids.cpu(), segments)
        return result
