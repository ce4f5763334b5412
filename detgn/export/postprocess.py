"""Pre- and post-processing of an exported model, in numpy and OpenCV only (no torch import).

An exported detgn model (detgn.export.wrapper) takes the test-time-resized image and returns
boxes in that image's pixels with 28x28 mask probabilities. These functions do what detgn's
DefaultPredictor does around the network, with the same rules:

- `resize_for_model`: ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST) with cv2 bilinear
  resizing (detgn.data.transforms.ResizeTransform), and BGR -> the model's INPUT.FORMAT.
- `to_original_size`: detector_postprocess: boxes scaled to the original (height, width),
  clipped, empty ones dropped, masks pasted by bilinear sampling at pixel centres
  (grid_sample, align_corners=False, zero outside the mask) over each box's region +- 1 pixel,
  then thresholded at `mask_threshold` (>=).
"""

from typing import Dict, Optional, Tuple

import cv2
import numpy as np

__all__ = ["resized_size", "resize_for_model", "paste_masks", "to_original_size"]


def resized_size(height: int, width: int, short_edge: int, max_size: int) -> Tuple[int, int]:
    """(new_h, new_w): short side `short_edge`, long side at most `max_size` (detgn's rounding: +0.5, floor)."""
    scale = short_edge * 1.0 / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_for_model(image_bgr: np.ndarray, min_size: int, max_size: int, input_format: str) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> the model input: (3, h, w) uint8 in `input_format` ("BGR" or "RGB")."""
    if not (
        isinstance(image_bgr, np.ndarray)
        and image_bgr.dtype == np.uint8
        and image_bgr.ndim == 3
        and image_bgr.shape[2] == 3
    ):
        raise ValueError(
            f"expected one HxWx3 uint8 BGR image, got {type(image_bgr).__name__} "
            f"{getattr(image_bgr, 'shape', '')} {getattr(image_bgr, 'dtype', '')}"
        )
    h, w = image_bgr.shape[:2]
    new_h, new_w = resized_size(h, w, min_size, max_size)
    img = (
        image_bgr if (new_h, new_w) == (h, w) else cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    )
    if input_format == "RGB":
        img = img[:, :, ::-1]
    elif input_format != "BGR":
        raise ValueError(f"input format must be BGR or RGB, got '{input_format}'")
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def _axis_weights(lo: float, hi: float, start: int, stop: int, m: int) -> np.ndarray:
    """(stop - start, m) bilinear weights of the m mask cells for output pixels start..stop-1 on one axis."""
    centres = np.arange(start, stop, dtype=np.float32) + np.float32(0.5)
    g = (centres - np.float32(lo)) / (np.float32(hi) - np.float32(lo)) * np.float32(2) - np.float32(1)
    src = ((g + np.float32(1)) * np.float32(m) - np.float32(1)) / np.float32(2)  # grid_sample, align_corners=False
    left = np.floor(src)
    frac = (src - left).astype(np.float32)
    left = left.astype(np.int64)
    weights = np.zeros((len(src), m), dtype=np.float32)
    rows = np.arange(len(src))
    for idx, wgt in ((left, np.float32(1) - frac), (left + 1, frac)):
        ok = (idx >= 0) & (idx < m)  # zero padding: cells outside the mask contribute nothing
        weights[rows[ok], idx[ok]] += wgt[ok]
    return weights


def paste_masks(
    mask_probs: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: Optional[float] = 0.5
) -> np.ndarray:
    """(R, M, M) probabilities + (R, 4) XYXY boxes in output pixels -> (R, height, width) bool masks
    (probability >= threshold), or float32 probabilities when threshold is None."""
    out = np.zeros((len(boxes), height, width), dtype=bool if threshold is not None else np.float32)
    for i, (probs, (x0, y0, x1, y1)) in enumerate(zip(mask_probs.astype(np.float32), boxes.astype(np.float32))):
        m = probs.shape[-1]
        xs, ys = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
        xe, ye = min(int(np.ceil(x1)) + 1, width), min(int(np.ceil(y1)) + 1, height)
        if xe <= xs or ye <= ys:
            continue
        wy = _axis_weights(y0, y1, ys, ye, probs.shape[0])
        wx = _axis_weights(x0, x1, xs, xe, m)
        pasted = wy @ probs @ wx.T
        out[i, ys:ye, xs:xe] = pasted if threshold is None else pasted >= threshold
    return out


def to_original_size(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    mask_probs: np.ndarray,
    input_hw: Tuple[int, int],
    output_hw: Tuple[int, int],
    mask_threshold: float = 0.5,
) -> Dict[str, np.ndarray]:
    """Model outputs at the input size -> {"boxes", "scores", "classes"[, "masks" (R, H, W) bool, "mask_probs"
    (R, M, M) the kept detections' mask probabilities (paste them with threshold=None for soft masks)]} at `output_hw`."""
    (in_h, in_w), (out_h, out_w) = input_hw, output_hw
    boxes = boxes.astype(np.float32) * np.array([out_w / in_w, out_h / in_h] * 2, dtype=np.float32)
    boxes = np.minimum(np.maximum(boxes, 0), np.array([out_w, out_h, out_w, out_h], dtype=np.float32))
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    out = {"boxes": boxes[keep], "scores": scores[keep].astype(np.float32), "classes": classes[keep].astype(np.int64)}
    if mask_probs.ndim == 3 and mask_probs.shape[1] > 0:
        out["mask_probs"] = mask_probs[keep].astype(np.float32)
        out["masks"] = paste_masks(out["mask_probs"], out["boxes"], out_h, out_w, mask_threshold)
    return out
