"""Box transform (R-CNN parametrisation) with weights and a clamp on dw, dh."""

import math
from typing import Tuple

import warnings

import torch

with warnings.catch_warnings():  # fvcore.nn scripts its focal loss at import: torch's jit.script deprecation notice
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
    from fvcore.nn import smooth_l1_loss as fvcore_smooth_l1_loss

__all__ = ["Box2BoxTransform", "smooth_l1_loss"]

# fvcore's, as detectron2 uses: beta < 1e-5 is exactly L1; "mean" of an empty input is 0 with a graph
smooth_l1_loss = fvcore_smooth_l1_loss

_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    """deltas (dx, dy, dw, dh) = weights * ((tx - sx) / sw, (ty - sy) / sh, log(tw / sw), log(th / sh)).

    Centres are x1 + 0.5 w (no +1). dw, dh are clamped to `scale_clamp` before exp.
    """

    def __init__(self, weights: Tuple[float, float, float, float], scale_clamp: float = _DEFAULT_SCALE_CLAMP):
        self.weights = tuple(weights)
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """(N, 4) src and target XYXY boxes -> (N, 4) deltas."""
        src_w = src_boxes[:, 2] - src_boxes[:, 0]
        src_h = src_boxes[:, 3] - src_boxes[:, 1]
        src_cx = src_boxes[:, 0] + 0.5 * src_w
        src_cy = src_boxes[:, 1] + 0.5 * src_h
        tw = target_boxes[:, 2] - target_boxes[:, 0]
        th = target_boxes[:, 3] - target_boxes[:, 1]
        tcx = target_boxes[:, 0] + 0.5 * tw
        tcy = target_boxes[:, 1] + 0.5 * th
        wx, wy, ww, wh = self.weights
        dx = wx * (tcx - src_cx) / src_w
        dy = wy * (tcy - src_cy) / src_h
        dw = ww * torch.log(tw / src_w)
        dh = wh * torch.log(th / src_h)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(N, 4k) deltas applied to (N, 4) boxes -> (N, 4k) boxes."""
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)
        pcx = dx * widths[:, None] + ctr_x[:, None]
        pcy = dy * heights[:, None] + ctr_y[:, None]
        pw = torch.exp(dw) * widths[:, None]
        ph = torch.exp(dh) * heights[:, None]
        x1, y1 = pcx - 0.5 * pw, pcy - 0.5 * ph
        x2, y2 = pcx + 0.5 * pw, pcy + 0.5 * ph
        return torch.stack((x1, y1, x2, y2), dim=-1).view(deltas.shape)
