"""Normalization layers and `get_norm`, the one place a norm name becomes a module.

Names: "GN" (GroupNorm, 32 groups by default), "FrozenBN", "BN", "SyncBN", "NaiveSyncBN"
(correct when some workers see empty batches), "LN" (per-position LayerNorm over channels)
and "" (no norm). A callable `f(channels) -> nn.Module` is accepted wherever a name is.
"""

import functools
import re
from typing import Callable, Optional, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from detgn.utils.errors import ConfigValueError

__all__ = ["FrozenBatchNorm2d", "NaiveSyncBatchNorm", "LayerNorm2d", "get_norm", "norm_from_cfg", "is_norm_module"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers.

    Computes y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, for (N, C, H, W)
    or (N, C) input. Buffers are named like BatchNorm2d's, so BN checkpoints load into it.
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.view(shape).to(x.dtype) + shift.view(shape).to(x.dtype)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is None or version < 2:  # old checkpoints lack running stats
            state_dict.setdefault(prefix + "running_mean", torch.zeros_like(self.running_mean))
            state_dict.setdefault(prefix + "running_var", torch.ones_like(self.running_var))
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def __repr__(self):
        return f"FrozenBatchNorm2d(num_features={self.num_features}, eps={self.eps})"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Return `module` with every BatchNorm/SyncBatchNorm replaced by FrozenBatchNorm2d.

        Statistics and affine values are copied, so eval-mode outputs are unchanged.
        """
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            res = cls(module.num_features, eps=module.eps)
            if module.affine:
                res.weight.data.copy_(module.weight.data.detach())
                res.bias.data.copy_(module.bias.data.detach())
            if module.running_mean is not None:
                res.running_mean.data.copy_(module.running_mean.data)
                res.running_var.data.copy_(module.running_var.data)
            return res
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                setattr(module, name, new_child)
        return module


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum) across the default process group."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """SyncBN built from plain all-reduce; each worker is weighted by its batch size, so
    workers with an empty batch (e.g. ROI heads without foreground) do not bias the mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or not self.training:
            return super().forward(x)
        n, c = x.shape[0], x.shape[1]
        half = x.dtype == torch.float16
        xf = x.float() if half else x
        if n > 0:
            mean = xf.mean(dim=[0, 2, 3])
            meansqr = (xf * xf).mean(dim=[0, 2, 3])
        else:  # keep the graph connected to x
            mean = meansqr = xf.sum(dim=[0, 2, 3])
        count = torch.full((1,), float(n * x.shape[2] * x.shape[3] if x.dim() == 4 else n), device=x.device)
        packed = torch.cat([mean * count, meansqr * count, count])
        packed = _AllReduceSum.apply(packed)
        total = packed[-1].clamp(min=1.0)
        mean, meansqr = packed[:c] / total, packed[c : 2 * c] / total
        var = (meansqr - mean * mean).clamp(min=0)
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach())
        inv = torch.rsqrt(var + self.eps)
        scale = self.weight * inv
        shift = self.bias - mean * scale
        out = xf * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        return out.to(x.dtype)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension at every position of (N, C, H, W) input."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class FP32StatsGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics and normalisation are computed in float32 under autocast.

    On CPU the native kernel already does that for bf16/fp16 inputs (float accumulation and
    float affine, one rounding of the output), so the input is passed as is and no copies are
    made. Elsewhere the input is cast to float32 explicitly and the result cast back.
    """

    def forward(self, x):
        if x.dtype in (torch.float16, torch.bfloat16):
            with torch.autocast(device_type=x.device.type, enabled=False):
                if x.device.type == "cpu":
                    return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
                return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)
        return super().forward(x)


NormSpec = Union[str, Callable[[int], nn.Module], None]


def get_norm(norm: NormSpec, out_channels: int, num_groups: int = 32, eps: float = 1e-5, impl: str = "torch"):
    """Build a norm layer for `out_channels` channels.

    Args:
        norm: a name ("GN", "FrozenBN", "BN", "SyncBN", "NaiveSyncBN", "LN", "") or a
            callable taking the channel count and returning a module.
        num_groups, eps: GroupNorm settings (used by "GN" only).
        impl: "torch" (FP32StatsGroupNorm) or "triton" (FusedGroupNorm, CUDA; "GN" only).
    Returns:
        nn.Module or None (for "" / None).
    """
    if norm is None:
        return None
    if isinstance(norm, str):
        if len(norm) == 0:
            return None
        groups = gn_groups(norm)
        if groups is not None:
            num_groups = groups or num_groups
            if out_channels % num_groups != 0:
                raise ConfigValueError(
                    f"GN: {out_channels} channels are not divisible by {num_groups} groups; set MODEL.GROUP_NORM.NUM_GROUPS"
                )
            if impl == "triton":
                from detgn.layers.fused_group_norm import FusedGroupNorm

                return FusedGroupNorm(num_groups, out_channels, eps=eps)
            if impl != "torch":
                raise ConfigValueError(f"MODEL.GROUP_NORM.IMPL '{impl}': choose 'torch' or 'triton'")
            return FP32StatsGroupNorm(num_groups, out_channels, eps=eps)
        table = _norm_layers()
        if norm not in table:
            raise ConfigValueError(f"Unknown norm '{norm}'; choose one of GN, {', '.join(table)} or '' (none)")
        return table[norm](out_channels)
    return norm(out_channels)


def _norm_layers():
    """The norms other than GroupNorm, by name."""
    return {
        "BN": nn.BatchNorm2d,
        "SyncBN": nn.SyncBatchNorm,
        "FrozenBN": FrozenBatchNorm2d,
        "NaiveSyncBN": NaiveSyncBatchNorm,
        "LN": LayerNorm2d,
    }


# every norm name get_norm takes ("" = none), besides "GN(G)"; the config rules read them from here
NORM_NAMES = ("", "GN", "FrozenBN", "BN", "SyncBN", "NaiveSyncBN", "LN")


def is_norm_name(value) -> bool:
    """`value` is a norm get_norm builds: one of NORM_NAMES or "GN(G)" with G >= 1."""
    return value in NORM_NAMES or (isinstance(value, str) and re.fullmatch(r"GN\([1-9][0-9]*\)", value) is not None)


def gn_groups(norm) -> Optional[int]:
    """For a GroupNorm name: the groups it names ("GN(16)" -> 16) or 0 for plain "GN" (the global setting);
    None for any other norm. Raises ConfigValueError for a malformed "GN(...)"."""
    if not isinstance(norm, str) or not norm.startswith("GN"):
        return None
    if norm == "GN":
        return 0
    m = re.fullmatch(r"GN\(([1-9][0-9]*)\)", norm)
    if not m:
        raise ConfigValueError(
            f"Unknown norm '{norm}': GroupNorm is 'GN' (MODEL.GROUP_NORM.NUM_GROUPS groups) or 'GN(G)' "
            "with G groups, e.g. 'GN(16)'"
        )
    return int(m.group(1))


def norm_from_cfg(norm: NormSpec, cfg) -> NormSpec:
    """Bind MODEL.GROUP_NORM settings to a "GN" or "GN(G)" norm name (G overrides NUM_GROUPS for that component);
    other names pass through."""
    groups = gn_groups(norm)
    if groups is not None:
        g = groups or cfg.MODEL.GROUP_NORM.NUM_GROUPS
        eps, impl = cfg.MODEL.GROUP_NORM.EPS, cfg.MODEL.GROUP_NORM.IMPL
        if g != 32 or eps != 1e-5 or impl != "torch":
            fn = functools.partial(get_norm, "GN", num_groups=g, eps=eps, impl=impl)
            return lambda c: fn(c)
    return norm


_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    FrozenBatchNorm2d,
    LayerNorm2d,
)


def is_norm_module(m: nn.Module) -> bool:
    """True for every normalization layer type (used for weight-decay groups)."""
    return isinstance(m, _NORM_TYPES)
