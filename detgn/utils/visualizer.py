"""Drawing instances (masks, boxes, class names, scores) on images with OpenCV."""
from typing import List, Optional, Sequence

import cv2
import numpy as np

__all__ = ["draw_instances", "color_for"]


def color_for(i: int) -> tuple:
    """A distinct, bright BGR colour for index i (golden-ratio hue walk)."""
    hue = int((i * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_instances(image_bgr: np.ndarray, boxes: Optional[np.ndarray] = None, masks: Optional[np.ndarray] = None,
                   classes: Optional[Sequence[int]] = None, scores: Optional[Sequence[float]] = None,
                   class_names: Optional[List[str]] = None, alpha: float = 0.45, draw_labels: bool = True) -> np.ndarray:
    """Return a copy of an (H, W, 3) uint8 BGR image with instances drawn.

    Args:
        boxes: (N, 4) XYXY pixels; masks: (N, H, W) bool; classes: N ints; scores: N floats.
    """
    out = image_bgr.copy()
    n = len(boxes) if boxes is not None else (len(masks) if masks is not None else 0)
    if masks is not None and len(masks):
        overlay = out.copy()
        for i in range(n):
            m = masks[i].astype(bool)
            overlay[m] = color_for(i)
        out = cv2.addWeighted(overlay, alpha, out, 1 - alpha, 0)
        for i in range(n):
            contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, color_for(i), 1)
    thickness = max(1, int(round(min(out.shape[:2]) / 400)))
    font_scale = max(0.3, min(out.shape[:2]) / 1200)
    for i in range(n):
        color = color_for(i)
        if boxes is not None:
            x0, y0, x1, y1 = [int(round(v)) for v in boxes[i]]
            cv2.rectangle(out, (x0, y0), (x1, y1), color, thickness)
        if draw_labels and (classes is not None or scores is not None) and boxes is not None:
            parts = []
            if classes is not None:
                c = int(classes[i])
                parts.append(class_names[c] if class_names and c < len(class_names) else str(c))
            if scores is not None:
                parts.append(f"{float(scores[i]) * 100:.0f}%")
            text = " ".join(parts)
            x0, y0 = int(boxes[i][0]), int(boxes[i][1])
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            y_text = max(y0 - 2, th + 1)
            cv2.rectangle(out, (x0, y_text - th - 1), (x0 + tw, y_text + 1), (0, 0, 0), -1)
            cv2.putText(out, text, (x0, y_text), cv2.FONT_HERSHEY_SIMPLEX, font_scale, color, 1, cv2.LINE_AA)
    return out
