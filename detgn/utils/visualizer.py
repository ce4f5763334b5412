"""Drawing instances (masks, boxes, class names, scores) on images with OpenCV, legible in dense scenes.

Masks are filled with one colour per instance (neighbours stay apart); with scores, each box outline
takes the colour of its score on a fixed colour scale (`score_color`), explained by `score_legend`.
Labels ("class score" or just the score for a one-class model) use a small font and are placed
greedily, highest score first, at the first free spot of a few around the box; a label that would
cover another is left out (its box colour still tells the score) and counted in the result.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["draw_instances", "color_for", "score_color", "score_legend", "title_bar", "DrawResult"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(i: int) -> tuple:
    """A distinct, bright BGR colour for index i (golden-ratio hue walk)."""
    hue = int((i * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def score_color(score: float, low: float = 0.0) -> tuple:
    """BGR colour of a score on OpenCV's perceptually ordered 'plasma' scale, from `low` (violet) to 1.0 (yellow);
    the scale's darkest fifth is left out so that low scores stay visible on dark images."""
    t = 0.0 if low >= 1.0 else float(np.clip((score - low) / (1.0 - low), 0.0, 1.0))
    lut = cv2.applyColorMap(np.uint8([[int(round(50 + t * 205))]]), cv2.COLORMAP_PLASMA)
    return tuple(int(c) for c in lut[0, 0])


@dataclass
class DrawResult:
    """The drawn image, how many instances it shows, and the (x0, y0, x1, y1) rectangles of the labels drawn."""

    image: np.ndarray
    num_instances: int
    label_rects: List[Tuple[int, int, int, int]]

    @property
    def num_labelled(self) -> int:
        return len(self.label_rects)


def _overlaps(a: Tuple[int, int, int, int], rects: List[Tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = a
    return any(x0 < r[2] and r[0] < x1 and y0 < r[3] and r[1] < y1 for r in rects)


def _label_spot(box, size, placed, image_hw) -> Optional[Tuple[int, int, int, int]]:
    """The first free rectangle (x0, y0, x1, y1) for a (w, h) label: above the box, inside its top,
    below it, inside its bottom; None when every spot is outside the image or over another label."""
    (tw, th), (h, w) = size, image_hw
    bx0, by0, bx1, by1 = box
    x = int(min(max(bx0, 0), max(w - tw - 2, 0)))
    for y_top in (by0 - th - 3, by0 + 1, by1 + 1, by1 - th - 3):
        rect = (x, int(y_top), x + tw + 2, int(y_top) + th + 3)
        if rect[1] < 0 or rect[3] > h:
            continue
        if not _overlaps(rect, placed):
            return rect
    return None


def draw_instances(
    image_bgr: np.ndarray,
    boxes: Optional[np.ndarray] = None,
    masks: Optional[np.ndarray] = None,
    classes: Optional[Sequence[int]] = None,
    scores: Optional[Sequence[float]] = None,
    class_names: Optional[List[str]] = None,
    alpha: float = 0.45,
    draw_labels: bool = True,
    score_low: float = 0.0,
    return_result: bool = False,
):
    """Return a copy of an (H, W, 3) uint8 BGR image with instances drawn (or a DrawResult with return_result).

    Args:
        boxes: (N, 4) XYXY pixels; masks: (N, H, W) bool; classes: N ints; scores: N floats in [0, 1].
        draw_labels: put text labels where they fit without covering each other.
        score_low: the score drawn darkest on the colour scale (the drawing threshold, usually).
    """
    out = image_bgr.copy()
    n = len(boxes) if boxes is not None else (len(masks) if masks is not None else 0)
    if masks is not None and len(masks):
        overlay = out.copy()
        for i in range(n):
            overlay[masks[i].astype(bool)] = color_for(i)
        out = cv2.addWeighted(overlay, alpha, out, 1 - alpha, 0)
        for i in range(n):
            contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, color_for(i), 1)
    h, w = out.shape[:2]
    thickness = max(1, int(round(min(h, w) / 500)))
    edge = [score_color(float(scores[i]), score_low) if scores is not None else color_for(i) for i in range(n)]
    if boxes is not None:
        for i in range(n):
            x0, y0, x1, y1 = [int(round(v)) for v in boxes[i]]
            cv2.rectangle(out, (x0, y0), (x1, y1), edge[i], thickness)
    placed: List[Tuple[int, int, int, int]] = []
    if draw_labels and boxes is not None and (scores is not None or classes is not None):
        one_class = class_names is not None and len(class_names) == 1
        font_scale = float(np.clip(min(h, w) / 1600, 0.3, 0.6))
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable") if scores is not None else np.arange(n)
        for i in order:
            parts = []
            if classes is not None and not one_class:
                c = int(classes[i])
                parts.append(class_names[c] if class_names and c < len(class_names) else str(c))
            if scores is not None:
                parts.append(f"{float(scores[i]) * 100:.0f}")
            if not parts:
                continue
            text = " ".join(parts)
            (tw, th), _ = cv2.getTextSize(text, _FONT, font_scale, 1)
            rect = _label_spot(boxes[i], (tw, th), placed, (h, w))
            if rect is None:
                continue
            placed.append(rect)
            cv2.rectangle(
                out, rect[:2], (rect[2], rect[3]), edge[i], -1
            )  # the box's colour behind, the most legible text on it
            b, g, r = edge[i]
            ink = (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 110 else (255, 255, 255)
            cv2.putText(out, text, (rect[0] + 1, rect[3] - 2), _FONT, font_scale, ink, 1, cv2.LINE_AA)
    return DrawResult(out, n, placed) if return_result else out


def title_bar(width: int, text: str, height: int = 20) -> np.ndarray:
    """A (height, width, 3) dark strip with `text`, to put above a panel."""
    bar = np.full((height, width, 3), 32, np.uint8)
    cv2.putText(bar, text, (4, height - 6), _FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return bar


def score_legend(width: int, low: float, note: str = "", height: int = 22) -> np.ndarray:
    """A (height, width, 3) strip: the box-outline colour scale from `low` to 1.0 with its end values, then
    `note`; parts that do not fit a narrow strip are left out from the right (the note first)."""
    strip = np.full((height, width, 3), 32, np.uint8)
    white, base = (255, 255, 255), height - 7

    def text(x, t, scale=0.4):
        (tw, _), _ = cv2.getTextSize(t, _FONT, scale, 1)
        if x + tw > width - 2:
            return None
        cv2.putText(strip, t, (x, base), _FONT, scale, white, 1, cv2.LINE_AA)
        return x + tw + 4

    x = text(4, "box colour = score")
    x = x and text(x + 4, f"{low:.2f}", 0.35)
    if x is None:
        return strip
    (end_w, _), _ = cv2.getTextSize("1.00", _FONT, 0.35, 1)
    bar_w = min(120, width - x - end_w - 8)
    if bar_w < 20:
        return strip
    for k in range(bar_w):
        strip[5 : height - 5, x + k] = score_color(low + (1.0 - low) * k / (bar_w - 1), low)
    x = text(x + bar_w + 4, "1.00", 0.35)
    if note and x is not None:
        text(x + 12, note)
    return strip
