"""ROIAlign with torchvision's forward and a vectorised CPU backward.

torchvision's CPU `roi_align` backward walks every ROI, channel, bin and sample in one thread;
on 2 cores it took 10-14% of a GN Mask R-CNN training step. The gradient of ROIAlign is
separable: each output bin (ph, pw) is (1 / count) x the sum of bilinear samples, and a
bilinear weight is a product of a row weight and a column weight. So for ROI r

    grad_window[r] = Ay[r]^T @ (grad_out[r] / count[r]) @ Ax[r]        (C, Kh, Kw)

where Ay[r] (Ph, Kh) and Ax[r] (Pw, Kw) hold the summed sample weights of each output row /
column on the rows / columns of a window around the ROI. Two batched matmuls replace the
scalar loop, and each window is added into the input gradient. The forward is torchvision's,
unchanged; the backward follows torchvision's sampling rules exactly (sample positions,
adaptive grid ceil(roi / pooled), out-of-range samples dropped, clamping at the border), so
gradients agree with torchvision's up to float32 summation order (tests/layers/test_roi_align.py).

Shapes: R ROIs, C channels, input (N, C, H, W), output (R, C, Ph, Pw).
"""

from typing import Tuple

import torch
from torchvision.ops import roi_align as _tv_roi_align

__all__ = ["roi_align", "roi_align_backward"]

_CHUNK = 64  # ROIs per batched matmul (bounds the window buffer: CHUNK x C x Kh x Kw floats)


def _axis_weights(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, pooled: int, length: int):
    """Sample weights of one axis for each ROI.

    start, bin_size: (R,) float; grid: (R,) samples per bin (>= 1). Returns (origin (R,) long,
    weights (R, pooled, K)) where weights[r, p, k] is the summed bilinear weight that output
    row p of ROI r puts on input row origin[r] + k.
    """
    num = start.shape[0]
    gmax = int(grid.max().item())
    i = torch.arange(gmax, device=start.device, dtype=start.dtype)
    p = torch.arange(pooled, device=start.device, dtype=start.dtype)
    g = grid.to(start.dtype)[:, None, None]
    pos = (
        start[:, None, None]
        + p[None, :, None] * bin_size[:, None, None]
        + (i[None, None, :] + 0.5) * bin_size[:, None, None] / g
    )
    valid = (i[None, None, :] < g) & (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    edge = low >= length - 1
    low = torch.where(edge, torch.full_like(low, length - 1), low)
    high = torch.where(edge, low, low + 1)
    frac = torch.where(edge, torch.zeros_like(pos), pos - low.to(pos.dtype))
    w_low = (1 - frac) * valid
    w_high = frac * valid
    big = torch.full_like(low, length)
    origin = torch.where(valid, low, big).view(num, -1).amin(dim=1).clamp(max=length - 1)
    k = (
        int(
            (torch.where(valid, high, torch.zeros_like(high)).view(num, -1).amax(dim=1) - origin)
            .clamp(min=0)
            .max()
            .item()
        )
        + 1
    )
    weights = start.new_zeros((num, pooled, k))
    o = origin[:, None, None]
    weights.scatter_add_(2, (low - o).clamp(0, k - 1), w_low)
    weights.scatter_add_(2, (high - o).clamp(0, k - 1), w_high)
    return origin, weights


def _rois_geometry(rois, spatial_scale, pooled: Tuple[int, int], sampling_ratio: int, aligned: bool):
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    w = rois[:, 3] * spatial_scale - offset - x1
    h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:  # torchvision's legacy mode forces at least 1x1
        w, h = w.clamp(min=1.0), h.clamp(min=1.0)
    bin_h, bin_w = h / pooled[0], w / pooled[1]
    if sampling_ratio > 0:
        gh = torch.full_like(h, sampling_ratio, dtype=torch.long)
        gw = torch.full_like(w, sampling_ratio, dtype=torch.long)
    else:
        gh = torch.ceil(h / pooled[0]).long()
        gw = torch.ceil(w / pooled[1]).long()
    count = (gh * gw).clamp(min=1).to(rois.dtype)
    return y1, x1, bin_h, bin_w, gh.clamp(min=1), gw.clamp(min=1), count, (gh > 0) & (gw > 0)


def roi_align_backward(
    grad_out: torch.Tensor,
    rois: torch.Tensor,
    input_shape,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    channels_last: bool = False,
) -> torch.Tensor:
    """Gradient of ROIAlign w.r.t. its input: (R, C, Ph, Pw), (R, 5) -> (N, C, H, W)."""
    n, c, height, width = input_shape
    ph, pw = grad_out.shape[-2:]
    grad_out = grad_out.to(torch.float32) if grad_out.dtype != rois.dtype else grad_out
    rois = rois.to(grad_out.dtype)
    y1, x1, bin_h, bin_w, gh, gw, count, nonempty = _rois_geometry(
        rois, spatial_scale, (ph, pw), sampling_ratio, aligned
    )
    grad_in = grad_out.new_zeros((n, c, height, width))
    if channels_last:
        grad_in = grad_in.contiguous(memory_format=torch.channels_last)
    if rois.shape[0] == 0:
        return grad_in
    scaled = grad_out / count.view(-1, 1, 1, 1) * nonempty.view(-1, 1, 1, 1)  # an ROI with an empty grid contributes 0
    batch = rois[:, 0].long()
    # similar ROIs in a chunk keep the windows small
    order = torch.argsort(torch.maximum(bin_h * ph, bin_w * pw))
    for start in range(0, order.numel(), _CHUNK):
        idx = order[start : start + _CHUNK]
        oy, ay = _axis_weights(y1[idx], bin_h[idx], gh[idx], ph, height)
        ox, ax = _axis_weights(x1[idx], bin_w[idx], gw[idx], pw, width)
        g = scaled[idx]
        win = torch.matmul(ay.transpose(1, 2).unsqueeze(1), torch.matmul(g, ax.unsqueeze(1)))  # (r, C, Kh, Kw)
        kh, kw = win.shape[-2:]
        for j, (b, y0, x0) in enumerate(zip(batch[idx].tolist(), oy.tolist(), ox.tolist())):
            hh, ww = min(kh, height - y0), min(kw, width - x0)
            grad_in[b, :, y0 : y0 + hh, x0 : x0 + ww] += win[j, :, :hh, :ww]
    return grad_in


class _ROIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.meta = (
            tuple(input.shape),
            spatial_scale,
            sampling_ratio,
            aligned,
            input.dtype,
            input.dim() == 4 and not input.is_contiguous() and input.is_contiguous(memory_format=torch.channels_last),
        )
        return _tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad_out):
        (rois,) = ctx.saved_tensors
        shape, scale, sampling_ratio, aligned, dtype, channels_last = ctx.meta
        grad = roi_align_backward(grad_out, rois, shape, scale, sampling_ratio, aligned, channels_last)
        return grad.to(dtype), None, None, None, None, None


def roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """torchvision.ops.roi_align with `rois` as an (R, 5) tensor; on CPU, when the input needs a
    gradient, the backward above replaces torchvision's single-threaded one. Elsewhere (CUDA,
    no gradient) this is torchvision's op as is."""
    if input.device.type != "cpu" or not (torch.is_grad_enabled() and input.requires_grad) or rois.requires_grad:
        return _tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    return _ROIAlign.apply(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
