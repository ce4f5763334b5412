"""The Triton GroupNorm(+ReLU) kernels against torch's GroupNorm, run on CPU through Triton's interpreter.

Not collected by the suite itself (no test_ prefix): tests/layers/test_fused_group_norm.py runs this file in a
subprocess with TRITON_INTERPRET=1, which Triton must see before it is first imported (its language
functions are compiled for the interpreter at import), so it cannot be switched on inside the suite's process.
"""

import os
import pytest
import torch
from torch.nn import functional as F

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "run through tests/layers/test_fused_group_norm.py (needs TRITON_INTERPRET=1 before triton is imported)",
        allow_module_level=True,
    )
pytest.importorskip("triton")

from detgn.layers import fused_group_norm as fgn  # noqa: E402


def _reference(x, g, w, b, eps, relu):
    y = F.group_norm(x, g, w, b, eps)
    return F.relu(y) if relu else y


def _both(x, g, relu, dtype=torch.float32, eps=1e-5):
    """(fused, reference) outputs and gradients of x, w, b for the same upstream gradient."""
    c = x.shape[1]
    gen = torch.Generator().manual_seed(1)
    w0, b0 = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
    outs = []
    for fn in (fgn.fused_group_norm, _reference):
        xi = x.detach().clone().to(dtype).requires_grad_()
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            xi = xi.detach().to(memory_format=torch.channels_last).requires_grad_()
        w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
        y = fn(xi, g, w, b, eps, relu)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
        grads = torch.autograd.grad(y, (xi, w, b), dy)
        outs.append((y, *grads))
    return outs


CASES = [((2, 16, 5, 7), 4, cl, relu) for cl in (False, True) for relu in (False, True)] + [
    ((3, 24, 9, 1), 8, False, True),
    ((3, 24, 9, 1), 8, True, False),  # 3 channels per group: not a power of 2
    ((1, 8, 70, 70), 2, False, False),
    ((1, 8, 70, 70), 2, True, True),
]  # 4,900 positions: several blocks


@pytest.mark.parametrize("shape,groups,channels_last,relu", CASES)
def test_equals_torch_group_norm(shape, groups, channels_last, relu):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3 + 1
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    (y, gx, gw, gb), (ry, rgx, rgw, rgb) = _both(x, groups, relu)
    assert y.shape == ry.shape and y.dtype == ry.dtype
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last) and gx.is_contiguous(
            memory_format=torch.channels_last
        )
    torch.testing.assert_close(y, ry, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, rgx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, rgw, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gb, rgb, rtol=1e-4, atol=1e-4)


def test_large_mean_keeps_its_variance():
    # E[x^2] - E[x]^2 in float32 would lose every digit here (mean 1e3, std 1e-2)
    x = torch.randn(2, 8, 20, 20, generator=torch.Generator().manual_seed(0)) * 1e-2 + 1e3
    w, b = torch.ones(8), torch.zeros(8)
    y = fgn.fused_group_norm(x, 4, w, b)
    ref = F.group_norm(x.double(), 4, w.double(), b.double()).float()
    # the floor is the mean's own float32 rounding (half an ulp at 1e3 = 3e-5 = 3e-3 std); torch's float32 GN: 4.7e-3
    torch.testing.assert_close(y, ref, rtol=0, atol=1.5e-2)


def test_bfloat16_within_one_rounding():
    """bf16 in, bf16 out, float32 inside: torch's CPU GroupNorm on the same bf16 tensor (float statistics, one
    rounding) agrees to bf16 rounding, ReLU mask included."""
    x = torch.randn(2, 16, 6, 6, generator=torch.Generator().manual_seed(0)).to(memory_format=torch.channels_last)
    (y, gx, gw, gb), (ry, rgx, rgw, rgb) = _both(x, 4, True, dtype=torch.bfloat16)
    assert y.dtype == torch.bfloat16 and gx.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ry.float(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(gx.float(), rgx.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gw, rgw, rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(gb, rgb, rtol=2e-2, atol=5e-2)


def test_module_is_a_group_norm_with_the_same_state_dict():
    m = fgn.FusedGroupNorm(8, 32)
    assert isinstance(m, torch.nn.GroupNorm)
    assert set(m.state_dict()) == set(torch.nn.GroupNorm(8, 32).state_dict()) == {"weight", "bias"}


def test_box_head_tower_fuses_relu_and_matches_torch_impl():
    """The 4conv1fc GN box head built with IMPL triton: same parameters, same outputs and gradients."""
    from detgn.layers import ShapeSpec
    from detgn.modeling.roi_heads.box_head import FastRCNNConvFCHead

    torch.manual_seed(0)
    ref = FastRCNNConvFCHead(
        input_shape=ShapeSpec(channels=16, height=7, width=7), conv_dims=[32, 32], fc_dims=[64], conv_norm="GN"
    )
    fused = FastRCNNConvFCHead(
        input_shape=ShapeSpec(channels=16, height=7, width=7),
        conv_dims=[32, 32],
        fc_dims=[64],
        conv_norm=lambda c: fgn.FusedGroupNorm(32, c),
    )
    assert fused.load_state_dict(ref.state_dict()) is not None
    calls = []
    for conv in fused.conv_norm_relus:
        conv.norm.register_forward_hook(lambda m, args, kwargs, out: calls.append(kwargs.get("relu")), with_kwargs=True)
    x = torch.randn(6, 16, 7, 7)
    outs = []
    for head in (ref, fused):
        xi = x.clone().requires_grad_()
        y = head(xi)
        y.square().sum().backward()
        outs.append((y, xi.grad, head.conv_norm_relus[0].weight.grad))
    assert calls == [True, True]  # both convs' GN+ReLU ran as one fused call
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
