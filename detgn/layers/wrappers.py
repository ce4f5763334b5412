"""Conv2d with optional norm and activation, weight standardisation, and init helpers."""
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Conv2d", "c2_msra_fill", "c2_xavier_fill", "cat"]


def is_relu(fn: Optional[Callable]) -> bool:
    """True for the ReLU callables the conv towers pass as `activation` (F.relu, F.relu_, torch.relu, nn.ReLU())."""
    return fn in (F.relu, F.relu_, torch.relu, torch.relu_) or isinstance(fn, nn.ReLU)


class Conv2d(nn.Conv2d):
    """nn.Conv2d that applies `norm` then `activation`, and optionally standardises its weight.

    Accepts empty (0-sized) batches. With `weight_standardization=True` the kernel of each
    output channel is normalised to zero mean and unit variance before the convolution
    (Qiao et al., 2019; used with GN as "GN+WS"). Parameter names are unchanged
    (`weight`, `bias`, `norm.*`), so checkpoints stay compatible.
    """

    def __init__(self, *args, norm: Optional[nn.Module] = None, activation: Optional[Callable] = None,
                 weight_standardization: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation
        self.weight_standardization = weight_standardization

    def _weight(self):
        w = self.weight
        if not self.weight_standardization:
            return w
        flat = w.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
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
        return s + (", weight_standardization=True" if self.weight_standardization else "")


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
