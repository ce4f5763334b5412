"""Deformable convolution (Dai et al. 2017; modulated: Zhu et al. 2019) on torchvision.ops.deform_conv2d.

Same parameters and state-dict keys as detgn's Conv2d (`weight`, optional `bias`, `norm.*`), as
detectron2's DeformConv / ModulatedDeformConv, so detectron2 checkpoints load unchanged. The offsets
and the mask come from the caller (a separate `conv2_offset` layer in DeformBottleneckBlock).

Layout (torchvision's = detectron2's = the original DCN's): for G offset groups and a kh x kw kernel,
    offset: (N, 2 * G * kh * kw, Ho, Wo), channel 2 * (g * kh * kw + i * kw + j) is the vertical (dy)
            and the next one the horizontal (dx) displacement, in input pixels, of tap (i, j) of group g;
    mask:   (N, G * kh * kw, Ho, Wo), channel g * kh * kw + i * kw + j multiplies that tap (modulated only).
A sample at a fractional position is bilinear; positions outside the input read 0.
"""

from typing import Optional

import torch
from torchvision.ops import deform_conv2d

from .wrappers import Conv2d

__all__ = ["DeformConv2d"]


class DeformConv2d(Conv2d):
    """Conv2d whose taps are displaced by per-position offsets; `forward(x, offset, mask=None)`.

    Args (beyond nn.Conv2d's): deformable_groups G (offset groups; in_channels must divide by G),
    norm / activation / weight_standardization as in detgn's Conv2d.
    """

    def __init__(self, *args, deformable_groups: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        if self.in_channels % deformable_groups:
            raise ValueError(
                f"DeformConv2d: in_channels {self.in_channels} must divide by deformable_groups {deformable_groups}"
            )
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("DeformConv2d supports numeric zero padding only")
        self.deformable_groups = deformable_groups

    @property
    def offset_channels(self) -> int:
        """Channels of `offset` (2 per tap and group); `mask` has half as many."""
        kh, kw = self.kernel_size
        return 2 * self.deformable_groups * kh * kw

    def forward(
        self, x: torch.Tensor, offset: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        if offset is None:
            raise TypeError("DeformConv2d.forward needs offset (N, 2 * G * kh * kw, Ho, Wo)")
        if offset.shape[1] != self.offset_channels:
            raise ValueError(
                f"DeformConv2d: offset has {offset.shape[1]} channels, expected {self.offset_channels} "
                f"(2 x {self.deformable_groups} groups x {self.kernel_size[0]}x{self.kernel_size[1]} taps)"
            )
        if mask is not None and mask.shape[1] != self.offset_channels // 2:
            raise ValueError(f"DeformConv2d: mask has {mask.shape[1]} channels, expected {self.offset_channels // 2}")
        if x.shape[0] == 0:  # empty batch: shapes from the plain convolution
            return super().forward(x)
        # float32 for half/bfloat16 inputs (autocast): torchvision's CPU kernel has no bfloat16 path
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        with torch.autocast(x.device.type, enabled=False):
            y = deform_conv2d(
                x.to(dtype),
                offset.to(dtype),
                self._weight().to(dtype),
                None if self.bias is None else self.bias.to(dtype),
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                mask=None if mask is None else mask.to(dtype),
            )
        y = y.to(x.dtype)
        if self.norm is not None:
            y = self.norm(y)
        if self.activation is not None:
            y = self.activation(y)
        return y

    def extra_repr(self):
        return super().extra_repr() + f", deformable_groups={self.deformable_groups}"
