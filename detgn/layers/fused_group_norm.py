"""GroupNorm (+ ReLU) as Triton kernels that read and write NHWC (channels_last) or NCHW tensors in place.

Why: torch's CUDA GroupNorm wants NCHW, so a channels_last model pays a layout copy around every GN,
and the ReLU after it is one more pass over the activation (and one more saved tensor). Here the
statistics, the normalisation, the affine and the optional ReLU are two kernels on the tensor's own
layout; the backward recomputes x_hat (and the ReLU mask) from x and the saved per-group mean and
1/std, so only x is kept for backward.

Numerics: statistics in float32 whatever the input dtype (per-block mean and centred sum of squares,
merged with Chan's parallel formula: no E[x^2] - E[x]^2 cancellation), output rounded once to the
input's dtype; within float32 rounding of `torch.nn.functional.group_norm` (tests/layers/test_fused_group_norm.py,
run on CPU through Triton's interpreter, TRITON_INTERPRET=1).

Selected with `MODEL.GROUP_NORM.IMPL "triton"` (CUDA only; see `check_fused_group_norm_available`).
Triton is imported on first use, so detgn imports without it.
"""

import os
from typing import Tuple

import torch
from torch import nn

from detgn.utils.errors import ConfigValueError

__all__ = ["FusedGroupNorm", "fused_group_norm", "check_fused_group_norm_available"]

_KERNELS = None  # (stats, apply, bwd_reduce, bwd_apply), compiled on first use


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_fused_group_norm_available(device: str) -> None:
    """Raise ConfigValueError (one line, what to change) when the Triton GroupNorm cannot run on `device`."""
    try:
        import triton  # noqa: F401
    except ImportError:
        raise ConfigValueError(
            "MODEL.GROUP_NORM.IMPL 'triton' needs the triton package (it comes with torch's CUDA "
            "builds); install it or set MODEL.GROUP_NORM.IMPL 'torch'"
        ) from None
    if not str(device).startswith("cuda") and not _interpreting():
        raise ConfigValueError(
            f"MODEL.GROUP_NORM.IMPL 'triton' runs on CUDA devices only (MODEL.DEVICE is '{device}'); "
            "set MODEL.GROUP_NORM.IMPL 'torch' for this device"
        )


def _kernels():
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    import triton
    import triton.language as tl

    @triton.jit
    def stats(X, MEAN_B, M2_B, S, CPG, G, NB, sN, sC, sS, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
        # one program: one (image, group) and one block of BLOCK_S positions x all CPG channels of the group
        ng = tl.program_id(0)
        b = tl.program_id(1)
        n = ng // G
        g = ng % G
        offs_s = b * BLOCK_S + tl.arange(0, BLOCK_S)
        offs_c = tl.arange(0, BLOCK_C)
        mask = (offs_s < S)[:, None] & (offs_c < CPG)[None, :]
        ptr = X + n * sN + (g * CPG + offs_c)[None, :] * sC + offs_s[:, None] * sS
        x = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
        cnt = tl.sum(tl.sum(mask.to(tl.float32), axis=1), axis=0)
        mean0 = tl.sum(tl.sum(x, axis=1), axis=0) / cnt
        d = tl.where(mask, x - mean0, 0.0)
        # second pass: the centred sum corrects the mean's rounding (which matters when |mean| >> std)
        sd = tl.sum(tl.sum(d, axis=1), axis=0)
        mean = mean0 + sd / cnt
        m2 = tl.sum(tl.sum(d * d, axis=1), axis=0) - sd * sd / cnt
        tl.store(MEAN_B + ng * NB + b, mean)
        tl.store(M2_B + ng * NB + b, m2)

    @triton.jit
    def apply(
        X, Y, MEAN, RSTD, W, B, S, CPG, G, sN, sC, sS, RELU: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr
    ):
        ng = tl.program_id(0)
        b = tl.program_id(1)
        n = ng // G
        g = ng % G
        offs_s = b * BLOCK_S + tl.arange(0, BLOCK_S)
        offs_c = tl.arange(0, BLOCK_C)
        cmask = offs_c < CPG
        mask = (offs_s < S)[:, None] & cmask[None, :]
        off = n * sN + (g * CPG + offs_c)[None, :] * sC + offs_s[:, None] * sS
        x = tl.load(X + off, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + ng)
        rstd = tl.load(RSTD + ng)
        w = tl.load(W + g * CPG + offs_c, mask=cmask, other=0.0).to(tl.float32)
        bias = tl.load(B + g * CPG + offs_c, mask=cmask, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * w[None, :] + bias[None, :]
        if RELU:
            y = tl.maximum(y, 0.0)
        tl.store(Y + off, y.to(Y.dtype.element_ty), mask=mask)

    @triton.jit
    def bwd_reduce(
        DY,
        X,
        MEAN,
        RSTD,
        W,
        B,
        SG_B,
        SGX_B,
        DW_B,
        DB_B,
        S,
        C,
        CPG,
        G,
        NB,
        sN,
        sC,
        sS,
        RELU: tl.constexpr,
        BLOCK_S: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        # per block: sum(dy*w) and sum(dy*w*x_hat) of the group, and per channel sum(dy*x_hat), sum(dy)
        ng = tl.program_id(0)
        b = tl.program_id(1)
        n = ng // G
        g = ng % G
        offs_s = b * BLOCK_S + tl.arange(0, BLOCK_S)
        offs_c = tl.arange(0, BLOCK_C)
        cmask = offs_c < CPG
        mask = (offs_s < S)[:, None] & cmask[None, :]
        off = n * sN + (g * CPG + offs_c)[None, :] * sC + offs_s[:, None] * sS
        x = tl.load(X + off, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + off, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + ng)
        rstd = tl.load(RSTD + ng)
        w = tl.load(W + g * CPG + offs_c, mask=cmask, other=0.0).to(tl.float32)
        xhat = (x - mean) * rstd
        if RELU:
            bias = tl.load(B + g * CPG + offs_c, mask=cmask, other=0.0).to(tl.float32)
            dy = tl.where(xhat * w[None, :] + bias[None, :] > 0.0, dy, 0.0)
        dy = tl.where(mask, dy, 0.0)
        xhat = tl.where(mask, xhat, 0.0)
        gw = dy * w[None, :]
        tl.store(SG_B + ng * NB + b, tl.sum(tl.sum(gw, axis=1), axis=0))
        tl.store(SGX_B + ng * NB + b, tl.sum(tl.sum(gw * xhat, axis=1), axis=0))
        row = (n * NB + b) * C + g * CPG + offs_c
        tl.store(DW_B + row, tl.sum(dy * xhat, axis=0), mask=cmask)
        tl.store(DB_B + row, tl.sum(dy, axis=0), mask=cmask)

    @triton.jit
    def bwd_apply(
        DY,
        X,
        DX,
        MEAN,
        RSTD,
        W,
        B,
        C1,
        C2,
        S,
        CPG,
        G,
        sN,
        sC,
        sS,
        RELU: tl.constexpr,
        BLOCK_S: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        # dx = rstd * (dy*w - mean(dy*w) - x_hat * mean(dy*w*x_hat)), means over the group
        ng = tl.program_id(0)
        b = tl.program_id(1)
        n = ng // G
        g = ng % G
        offs_s = b * BLOCK_S + tl.arange(0, BLOCK_S)
        offs_c = tl.arange(0, BLOCK_C)
        cmask = offs_c < CPG
        mask = (offs_s < S)[:, None] & cmask[None, :]
        off = n * sN + (g * CPG + offs_c)[None, :] * sC + offs_s[:, None] * sS
        x = tl.load(X + off, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + off, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + ng)
        rstd = tl.load(RSTD + ng)
        c1 = tl.load(C1 + ng)
        c2 = tl.load(C2 + ng)
        w = tl.load(W + g * CPG + offs_c, mask=cmask, other=0.0).to(tl.float32)
        xhat = (x - mean) * rstd
        if RELU:
            bias = tl.load(B + g * CPG + offs_c, mask=cmask, other=0.0).to(tl.float32)
            dy = tl.where(xhat * w[None, :] + bias[None, :] > 0.0, dy, 0.0)
        dx = rstd * (dy * w[None, :] - c2 - xhat * c1)
        tl.store(DX + off, dx.to(DX.dtype.element_ty), mask=mask)

    _KERNELS = (stats, apply, bwd_reduce, bwd_apply)
    return _KERNELS


def _layout(x: torch.Tensor) -> Tuple[torch.Tensor, int, int, int, int]:
    """(x or a dense copy, S = positions per image, strides of image, channel, position) for (N, C, *spatial) x."""
    n, c = x.shape[0], x.shape[1]
    s = x[0, 0].numel() if n and c else 0
    if x.is_contiguous():
        return x, s, c * s, s, 1
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x, s, s * c, 1, c
    x = x.contiguous()
    return x, s, c * s, s, 1


def _blocks(cpg: int, s: int) -> Tuple[int, int, int]:
    """(BLOCK_S, BLOCK_C, number of position blocks): ~4096 elements per program."""
    import triton

    block_c = triton.next_power_of_2(cpg)
    block_s = max(1, min(triton.next_power_of_2(max(s, 1)), 4096 // block_c))
    return block_s, block_c, triton.cdiv(s, block_s)


class _FusedGroupNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups: int, eps: float, relu: bool):
        stats, apply, _, _ = _kernels()
        x, s, sn, sc, ss = _layout(x)
        n, c = x.shape[0], x.shape[1]
        g = num_groups
        cpg = c // g
        block_s, block_c, nb = _blocks(cpg, s)
        f32 = dict(device=x.device, dtype=torch.float32)
        mean_b = torch.empty(n * g, nb, **f32)
        m2_b = torch.empty(n * g, nb, **f32)
        grid = (n * g, nb)
        stats[grid](x, mean_b, m2_b, s, cpg, g, nb, sn, sc, ss, BLOCK_S=block_s, BLOCK_C=block_c)
        # Chan et al.'s merge of the blocks' (count, mean, M2)
        cnt_b = (torch.clamp(s - torch.arange(nb, device=x.device) * block_s, max=block_s) * cpg).to(torch.float32)
        total = float(s * cpg)
        mean = (mean_b * cnt_b).sum(dim=1) / total
        m2 = m2_b.sum(dim=1) + ((mean_b - mean[:, None]) ** 2 * cnt_b).sum(dim=1)
        rstd = torch.rsqrt(m2 / total + eps)
        y = torch.empty_like(x)
        apply[grid](x, y, mean, rstd, weight, bias, s, cpg, g, sn, sc, ss, RELU=relu, BLOCK_S=block_s, BLOCK_C=block_c)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.cfg = (num_groups, relu)
        return y

    @staticmethod
    def backward(ctx, dy):
        _, _, bwd_reduce, bwd_apply = _kernels()
        x, weight, bias, mean, rstd = ctx.saved_tensors
        g, relu = ctx.cfg
        x, s, sn, sc, ss = _layout(x)
        n, c = x.shape[0], x.shape[1]
        # dy in x's layout, so one set of strides serves both
        if dy.stride() != x.stride():
            dy = torch.empty_like(x).copy_(dy)
        cpg = c // g
        block_s, block_c, nb = _blocks(cpg, s)
        f32 = dict(device=x.device, dtype=torch.float32)
        sg_b = torch.empty(n * g, nb, **f32)
        sgx_b = torch.empty(n * g, nb, **f32)
        dw_b = torch.empty(n, nb, c, **f32)
        db_b = torch.empty(n, nb, c, **f32)
        grid = (n * g, nb)
        bwd_reduce[grid](
            dy,
            x,
            mean,
            rstd,
            weight,
            bias,
            sg_b,
            sgx_b,
            dw_b,
            db_b,
            s,
            c,
            cpg,
            g,
            nb,
            sn,
            sc,
            ss,
            RELU=relu,
            BLOCK_S=block_s,
            BLOCK_C=block_c,
        )
        total = float(s * cpg)
        c1 = sgx_b.sum(dim=1) / total
        c2 = sg_b.sum(dim=1) / total
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(x)
            bwd_apply[grid](
                dy,
                x,
                dx,
                mean,
                rstd,
                weight,
                bias,
                c1,
                c2,
                s,
                cpg,
                g,
                sn,
                sc,
                ss,
                RELU=relu,
                BLOCK_S=block_s,
                BLOCK_C=block_c,
            )
        dw = dw_b.sum(dim=(0, 1)).to(weight.dtype) if ctx.needs_input_grad[1] else None
        db = db_b.sum(dim=(0, 1)).to(bias.dtype) if ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None, None


def fused_group_norm(
    x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5, relu: bool = False
) -> torch.Tensor:
    """GroupNorm of (N, C, *spatial) x, then ReLU when `relu`; output in x's dtype and memory layout.

    Statistics in float32; weight and bias are (C,) tensors. Differentiable in x, weight and bias.
    """
    if x.shape[1] % num_groups:
        raise ValueError(f"fused_group_norm: {x.shape[1]} channels are not divisible by {num_groups} groups")
    if x.numel() == 0:
        y = x * weight.view(1, -1, *([1] * (x.dim() - 2))) + bias.view(1, -1, *([1] * (x.dim() - 2)))
        return y.clamp_min(0) if relu else y
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _FusedGroupNormFn.apply(x, weight, bias, num_groups, eps, relu)


class FusedGroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and state-dict keys) computed by the Triton kernels above.

    `forward(x, relu=True)` also applies ReLU in the same pass; `layers.Conv2d` uses that when its
    activation is ReLU (`fuses_relu`).
    """

    fuses_relu = True

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        if not self.affine:
            raise ValueError("FusedGroupNorm needs affine=True")
        return fused_group_norm(x, self.num_groups, self.weight, self.bias, self.eps, relu)
