"""Conv2d with optional norm and activation, weight standardisation, and init helpers."""

from typing import Callable, Optional, Union

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Conv2d", "WS_CONVENTIONS", "ws_setting", "c2_msra_fill", "c2_xavier_fill", "cat"]


def is_relu(fn: Optional[Callable]) -> bool:
    """True for the ReLU callables the conv towers pass as `activation` (F.relu, F.relu_, torch.relu, nn.ReLU())."""
    return fn in (F.relu, F.relu_, torch.relu, torch.relu_) or isinstance(fn, nn.ReLU)


WS_CONVENTIONS = ("auto", "timm", "mmcv")


def ws_setting(enabled: bool, convention: str = "auto"):
    """The `weight_standardization` argument of Conv2d for a config part: False, or the convention name
    (MODEL.WEIGHT_STANDARDIZATION.<PART> and .CONVENTION)."""
    return convention if enabled else False


class Conv2d(nn.Conv2d):
    """nn.Conv2d that applies `norm` then `activation`, and optionally standardises its weight.

    Accepts empty (0-sized) batches. With `weight_standardization` set, the kernel of each output
    channel is normalised to zero mean and unit spread before the convolution (Qiao et al., 2019; used
    with GN as "GN+WS"), in one of two conventions that differ by ~1e-4 relative on a 3x3x256 kernel:
      "timm" (or True): (w - mean) / sqrt(biased variance + 1e-5)
      "mmcv":           (w - mean) / (unbiased standard deviation + 1e-5)   (mmcv's conv_ws_2d, JHU's WS code)
      "auto":           "timm" until weights trained with mmcv's are loaded (DetectionCheckpointer switches it)
    Parameter names are unchanged (`weight`, `bias`, `norm.*`), so checkpoints stay compatible.
    """

    def __init__(
        self,
        *args,
        norm: Optional[nn.Module] = None,
        activation: Optional[Callable] = None,
        weight_standardization: Union[bool, str] = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation
        if weight_standardization not in (False, True) + WS_CONVENTIONS:
            raise ValueError(
                f"weight_standardization must be a bool or one of {WS_CONVENTIONS}, got {weight_standardization!r}"
            )
        self.weight_standardization = bool(weight_standardization)
        self.ws_auto = weight_standardization == "auto"
        self.ws_convention = "mmcv" if weight_standardization == "mmcv" else "timm"

    def _weight(self):
        w = self.weight
        if not self.weight_standardization:
            return w
        flat = w.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        if self.ws_convention == "mmcv":
            return (w - mean) / (flat.std(dim=1, unbiased=True).view(-1, 1, 1, 1) + 1e-5)
        var = flat.var(dim=1, unbiased=False).view(-1, 1, 1, 1)
        return (w - mean) / torch.sqrt(var + 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self._weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            if x.numel() == 0 and isinstance(self.norm, nn.GroupNorm):
                x = x * self.norm.weight.view(1, -1, 1, 1) + self.norm.bias.view(1, -1, 1, 1)  # keeps grads connected
            elif getattr(self.norm, "fuses_relu", False) and is_relu(self.activation):
                return self.norm(x, relu=True)  # GroupNorm and ReLU in one pass (FusedGroupNorm)
            else:
                x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self):
        s = super().extra_repr()
        return s + (
            f", weight_standardization={self.ws_convention}{' (auto)' if self.ws_auto else ''}"
            if self.weight_standardization
            else ""
        )


def c2_msra_fill(module: nn.Module) -> None:
    """Caffe2 MSRAFill: kaiming normal, fan_out, ReLU gain; bias 0."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2 XavierFill: uniform with bound sqrt(3 / fan_in); bias 0."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def cat(tensors, dim: int = 0):
    """torch.cat that skips the copy for a single tensor."""
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)
