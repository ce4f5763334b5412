"""detgn's ROIAlign backward equals torchvision's (same sampling rules), forward unchanged."""

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from detgn.layers.roi_align import roi_align


def _rois(n_img, h, w, scale, num, seed):
    g = torch.Generator().manual_seed(seed)
    img_h, img_w = h / scale, w / scale
    x1 = torch.rand(num, generator=g) * img_w * 1.1 - 0.05 * img_w  # some boxes leave the image
    y1 = torch.rand(num, generator=g) * img_h * 1.1 - 0.05 * img_h
    bw = torch.rand(num, generator=g) * img_w * 0.6 + 0.2
    bh = torch.rand(num, generator=g) * img_h * 0.6 + 0.2
    b = torch.randint(0, n_img, (num,), generator=g).float()
    rois = torch.stack([b, x1, y1, x1 + bw, y1 + bh], 1)
    rois[:3, 3:] = rois[:3, 1:3]  # degenerate (zero-size) boxes
    rois[3] = torch.tensor([0, -50.0, -50.0, -20.0, -30.0])  # fully outside
    return rois


@pytest.mark.parametrize(
    "aligned,sampling_ratio,out,channels_last",
    [(True, 0, 7, False), (True, 0, 14, True), (False, 0, 7, False), (True, 2, 7, True), (False, 3, (5, 4), False)],
)
def test_matches_torchvision(aligned, sampling_ratio, out, channels_last):
    torch.manual_seed(0)
    n, c, h, w, scale = 2, 8, 23, 31, 0.25
    x = torch.randn(n, c, h, w, dtype=torch.float64).float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = _rois(n, h, w, scale, 40, seed=1)
    xa = x.clone().requires_grad_()
    ya = tv_roi_align(xa, rois, out, scale, sampling_ratio, aligned)
    xb = x.clone().requires_grad_()
    yb = roi_align(xb, rois, out, scale, sampling_ratio, aligned)
    assert torch.equal(ya, yb)  # the forward is torchvision's
    g = torch.randn(ya.shape, generator=torch.Generator().manual_seed(2))
    ya.backward(g)
    yb.backward(g)
    assert xb.grad.shape == xa.grad.shape
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-5, atol=1e-5 * xa.grad.abs().max().item())
    assert xb.grad.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_large_rois_and_chunks():
    """More ROIs than one chunk, windows as large as the map, gradient checked in float64 arithmetic."""
    torch.manual_seed(3)
    x = torch.randn(1, 4, 12, 10, requires_grad=True)
    rois = torch.tensor([[0, -3.0, -2.0, 60.0, 50.0]] * 5 + [[0, 1.0, 1.0, 2.0, 3.0]] * 70)
    y = roi_align(x, rois, 7, 0.25, 0, True)
    g = torch.randn_like(y)
    y.backward(g)
    xr = x.detach().clone().requires_grad_()
    tv_roi_align(xr, rois, 7, 0.25, 0, True).backward(g)
    assert torch.allclose(x.grad, xr.grad, rtol=1e-5, atol=1e-5)


def test_no_grad_and_empty():
    x = torch.randn(1, 3, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 20.0, 20.0]])
    assert torch.equal(roi_align(x, rois, 7, 0.25, 0, True), tv_roi_align(x, rois, 7, 0.25, 0, True))
    xg = x.clone().requires_grad_()
    y = roi_align(xg, rois[:0], 7, 0.25, 0, True)
    assert y.shape == (0, 3, 7, 7)
    y.sum().backward()
    assert xg.grad is not None and (xg.grad == 0).all()
