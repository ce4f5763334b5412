"""Deformable convolutions: zero offsets are the plain convolution, a fractional offset samples
bilinearly (computed by hand), the modulated mask scales each tap, the bottleneck with zero-initialised
offsets equals the plain bottleneck, and the offset layout is (dy, dx) per tap as in detectron2."""

import pytest
import torch
from torch.nn import functional as F

from detgn.layers import DeformConv2d
from detgn.modeling.backbone.resnet import BottleneckBlock, DeformBottleneckBlock


@pytest.mark.parametrize("groups, deformable_groups, stride, dilation", [(1, 1, 1, 1), (2, 2, 2, 1), (4, 1, 1, 2)])
def test_zero_offsets_and_unit_mask_give_the_plain_convolution(groups, deformable_groups, stride, dilation):
    torch.manual_seed(0)
    conv = DeformConv2d(
        8,
        8,
        3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        groups=groups,
        bias=True,
        deformable_groups=deformable_groups,
    )
    x = torch.randn(2, 8, 11, 13)
    ref = F.conv2d(x, conv.weight, conv.bias, stride, dilation, dilation, groups)
    offset = torch.zeros(2, conv.offset_channels, *ref.shape[-2:])
    assert torch.allclose(conv(x, offset), ref, atol=1e-5)
    mask = torch.ones(2, conv.offset_channels // 2, *ref.shape[-2:])
    assert torch.allclose(conv(x, offset, mask), ref, atol=1e-5)
    # the mask multiplies every tap: 0.5 everywhere halves the convolution (bias excluded)
    assert torch.allclose(
        conv(x, offset, mask * 0.5), 0.5 * (ref - conv.bias.view(1, -1, 1, 1)) + conv.bias.view(1, -1, 1, 1), atol=1e-5
    )


def test_fractional_offset_is_a_bilinear_sample_computed_by_hand():
    conv = DeformConv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.arange(30, dtype=torch.float32).view(1, 1, 5, 6) ** 1.5  # not linear: bilinear weights matter
    dy, dx = 0.75, -0.4
    offset = torch.empty(1, 2, 5, 6)
    offset[:, 0], offset[:, 1] = dy, dx  # channel 0 is vertical, 1 horizontal
    out = conv(x, offset)
    y, xx = 2 + dy, 3 + dx  # output (2, 3) samples the input at (2.75, 2.6)
    y0, x0 = int(y), int(xx)
    ly, lx = y - y0, xx - x0
    img = x[0, 0]
    expected = (
        (1 - ly) * (1 - lx) * img[y0, x0]
        + (1 - ly) * lx * img[y0, x0 + 1]
        + ly * (1 - lx) * img[y0 + 1, x0]
        + ly * lx * img[y0 + 1, x0 + 1]
    )
    assert torch.allclose(out[0, 0, 2, 3], expected, rtol=1e-6)
    # an integer offset of one row down reads the next row; outside the input reads 0
    offset = torch.zeros(1, 2, 5, 6)
    offset[:, 0] = 1.0
    shifted = conv(x, offset)[0, 0]
    assert torch.allclose(shifted[:-1], img[1:]) and torch.equal(shifted[-1], torch.zeros(6))


def test_offsets_of_each_tap_and_group_follow_detectron2s_layout():
    """Channel 2 * (g * 9 + i * 3 + j) moves tap (i, j) of offset group g vertically: moving only the
    centre tap of group 1 by one row changes only the output channels computed from group 1's inputs."""
    torch.manual_seed(0)
    conv = DeformConv2d(4, 2, 3, padding=1, bias=False, groups=2, deformable_groups=2)
    x = torch.randn(1, 4, 7, 7)
    offset = torch.zeros(1, 36, 7, 7)
    base = conv(x, offset)
    offset[:, 2 * (9 + 4)] = 1.0  # group 1, centre tap (1, 1), dy
    moved = conv(x, offset)
    assert torch.equal(moved[:, 0], base[:, 0])  # output 0 reads input channels 0-1 = offset group 0
    centre_only = torch.zeros_like(conv.weight)
    centre_only[:, :, 1, 1] = conv.weight[:, :, 1, 1]
    delta = F.conv2d(torch.roll(x, -1, dims=2), centre_only, padding=1, groups=2) - F.conv2d(
        x, centre_only, padding=1, groups=2
    )
    delta[:, :, -1] = (-F.conv2d(x, centre_only, padding=1, groups=2))[
        :, :, -1
    ]  # the last row reads below the image: 0
    assert torch.allclose(moved[:, 1] - base[:, 1], delta[:, 1], atol=1e-5)


def test_wrong_offset_channels_are_refused_by_name():
    conv = DeformConv2d(4, 4, 3, padding=1, deformable_groups=2)
    with pytest.raises(ValueError, match="offset has 18 channels, expected 36"):
        conv(torch.randn(1, 4, 5, 5), torch.zeros(1, 18, 5, 5))


@pytest.mark.parametrize("modulated", [False, True])
def test_bottleneck_with_zero_initialised_offsets_equals_the_plain_bottleneck(modulated):
    torch.manual_seed(0)
    kw = dict(bottleneck_channels=32, stride=2, num_groups=2, norm="GN", stride_in_1x1=False)
    deform = DeformBottleneckBlock(64, 128, deform_modulated=modulated, deform_num_groups=2, **kw)
    plain = BottleneckBlock(64, 128, **kw)
    sd = deform.state_dict()
    assert list(sd) == [
        "shortcut.weight",
        "shortcut.norm.weight",
        "shortcut.norm.bias",
        "conv1.weight",
        "conv1.norm.weight",
        "conv1.norm.bias",
        "conv2_offset.weight",
        "conv2_offset.bias",
        "conv2.weight",
        "conv2.norm.weight",
        "conv2.norm.bias",
        "conv3.weight",
        "conv3.norm.weight",
        "conv3.norm.bias",
    ]
    assert (
        sd["conv2_offset.weight"].shape == ((27 if modulated else 18) * 2, 32, 3, 3)
        and not sd["conv2_offset.weight"].any()
    )
    plain.load_state_dict({k: v for k, v in sd.items() if not k.startswith("conv2_offset")})
    x = torch.randn(2, 64, 12, 10)
    y = deform(x)
    assert (
        torch.allclose(y, plain(x), atol=1e-5)
        if not modulated
        else torch.allclose(y, _half_mask_plain(plain, x), atol=1e-5)
    )
    y.sum().backward()
    assert deform.conv2_offset.weight.grad.abs().sum() > 0  # the offsets learn from the first step


def _half_mask_plain(block, x):
    """Modulated, zero-initialised: mask = sigmoid(0) = 0.5 on every tap of the 3x3."""
    out = F.relu(block.conv1(x))
    out = (
        F.conv2d(
            out,
            block.conv2.weight,
            None,
            block.conv2.stride,
            block.conv2.padding,
            block.conv2.dilation,
            block.conv2.groups,
        )
        * 0.5
    )
    out = block.conv3(F.relu(block.conv2.norm(out)))
    return F.relu(out + block.shortcut(x))
