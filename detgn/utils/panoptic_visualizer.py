"""Drawing panoptic segmentations: stuff as translucent regions in one colour per stuff class (with a thin outline),
things as instances on top (visualizer.draw_instances: masks, boxes, labels), and a legend strip below naming the
stuff colours present and counting the things."""

from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from .visualizer import _FONT, draw_instances

__all__ = ["draw_panoptic", "panoptic_to_parts", "stuff_color", "stuff_legend"]


def stuff_color(label: int, colors: Optional[Sequence] = None) -> tuple:
    """BGR colour of stuff label `label`: the dataset's ("stuff_colors", RGB) when given, else a muted hue."""
    if colors is not None and label < len(colors):
        r, g, b = colors[label]
        return int(b), int(g), int(r)
    hue = int(((label * 0.381966) % 1.0) * 179)
    return tuple(int(c) for c in cv2.cvtColor(np.uint8([[[hue, 120, 200]]]), cv2.COLOR_HSV2BGR)[0, 0])


def panoptic_to_parts(panoptic: np.ndarray, segments: List[Dict]):
    """(H, W) segment ids + segments_info (detgn's PanopticFPN output: "isthing", "category_id", "score" for things)
    -> ((H, W) int stuff labels, 0 where none; thing masks (N, H, W) bool; classes; scores (None without))."""
    stuff = np.zeros(panoptic.shape, np.int64)
    masks, classes, scores = [], [], []
    for s in segments:
        region = panoptic == s["id"]
        if s.get("isthing"):
            masks.append(region)
            classes.append(int(s["category_id"]))
            scores.append(float(s.get("score", 1.0)))
        else:
            stuff[region] = int(s["category_id"])
    masks = np.stack(masks) if masks else np.zeros((0,) + panoptic.shape, bool)
    has_scores = any("score" in s for s in segments if s.get("isthing"))
    return stuff, masks, classes, (scores if has_scores else None)


def _boxes(masks: np.ndarray) -> np.ndarray:
    boxes = np.zeros((len(masks), 4), np.float64)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


def stuff_legend(width: int, labels: Sequence[int], names: Sequence[str], colors=None, note: str = "", height=22):
    """A (height, width, 3) strip: a swatch and the name of each stuff label, then `note`; what does not fit a
    narrow strip is left out from the right."""
    strip = np.full((height, width, 3), 32, np.uint8)
    x = 4
    for label in labels:
        name = names[label] if names is not None and label < len(names) else str(label)
        (tw, _), _ = cv2.getTextSize(name, _FONT, 0.4, 1)
        if x + 14 + tw > width - 2:
            return strip
        cv2.rectangle(strip, (x, 5), (x + 10, height - 6), stuff_color(label, colors), -1)
        cv2.putText(strip, name, (x + 14, height - 7), _FONT, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        x += 14 + tw + 12
    if note:
        (tw, _), _ = cv2.getTextSize(note, _FONT, 0.4, 1)
        if x + tw <= width - 2:
            cv2.putText(strip, note, (x + 4, height - 7), _FONT, 0.4, (200, 200, 200), 1, cv2.LINE_AA)
    return strip


def draw_panoptic(
    image_bgr: np.ndarray,
    stuff: np.ndarray,
    thing_masks: np.ndarray,
    thing_classes: Sequence[int],
    thing_scores: Optional[Sequence[float]],
    *,
    thing_names: Optional[List[str]] = None,
    stuff_names: Optional[List[str]] = None,
    stuff_colors=None,
    ignore_value: int = 255,
    alpha: float = 0.4,
    score_low: float = 0.0,
    legend: bool = True,
) -> np.ndarray:
    """(H, W, 3) BGR image (+ a 22-row legend strip below when `legend`) with the stuff regions of `stuff` ((H, W)
    labels: 0 = none or "things", ignore_value unlabelled, others stuff classes indexing stuff_names/colors) and
    the things (N, H, W) masks with their classes and scores (or None, ground truth) drawn on top."""
    out = image_bgr.copy()
    present = [int(v) for v in np.unique(stuff) if v != 0 and v != ignore_value]
    if present:
        overlay = out.copy()
        for label in present:
            overlay[stuff == label] = stuff_color(label, stuff_colors)
        out = cv2.addWeighted(overlay, alpha, out, 1 - alpha, 0)
        for label in present:
            contours, _ = cv2.findContours(
                (stuff == label).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(out, contours, -1, stuff_color(label, stuff_colors), 1)
    r = draw_instances(
        out,
        _boxes(thing_masks),
        thing_masks,
        list(thing_classes),
        None if thing_scores is None else list(thing_scores),
        thing_names,
        score_low=score_low,
        return_result=True,
    )
    if not legend:
        return r.image
    note = f"{r.num_instances} things" + (f", box colour = score from {score_low:.2f}" if thing_scores else "")
    strip = stuff_legend(r.image.shape[1], present, stuff_names, stuff_colors, note)
    return np.concatenate([r.image, strip], axis=0)
