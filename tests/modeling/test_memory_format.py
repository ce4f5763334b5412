"""channels_last (NHWC) must compute what the NCHW model computes: features, losses, gradients, detections."""

import pytest
import torch

from detgn.modeling import build_model

from .util import make_inputs, small_gn_cfg
from tests.util import rel_close


def _pair():
    cfg = small_gn_cfg()
    cfg.MODEL.MEMORY_FORMAT = "contiguous"
    torch.manual_seed(0)
    nchw = build_model(cfg)
    cfg.MODEL.MEMORY_FORMAT = "channels_last"
    nhwc = build_model(cfg)
    nhwc.load_state_dict(nchw.state_dict())
    return nchw, nhwc


# Gradients of float32 runs through ReLUs: a pre-activation within rounding of 0 takes the other branch
# in one layout, which moves single gradient entries. Measured, relative to the largest entry
# (docs/benchmarks.md, "Tolerances across CPU kinds"): <= 4.4e-6 where oneDNN uses AVX-512, up to
# 3.6e-2 with ONEDNN_MAX_CPU_ISA=AVX2 (its NCHW kernels round more), ~1e-2 seen on an AMD EPYC. A layout
# bug moves them by O(1); the exact comparison is test_channels_last_gradients_float64.
GRAD_REL = 1e-1


def test_weights_and_features_are_channels_last():
    nchw, nhwc = _pair()
    w = nhwc.backbone.bottom_up.stem.conv1.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert nchw.backbone.bottom_up.stem.conv1.weight.is_contiguous()
    x = make_inputs(seed=0)
    feats_a = nchw.backbone(nchw.preprocess_image([x]).tensor)
    images = nhwc.preprocess_image([x])
    assert images.tensor.is_contiguous(memory_format=torch.channels_last)
    feats_b = nhwc.backbone(images.tensor)
    assert feats_b["p2"].is_contiguous(memory_format=torch.channels_last)
    for k in feats_a:
        assert rel_close(feats_a[k], feats_b[k]), k


def _grads(model, names):
    params = dict(model.named_parameters())
    return {n: params[n].grad for n in names}


def test_channels_last_losses_and_gradients_match():
    """Losses of the whole model, and gradients through paths without discrete decisions.

    The ROI-head gradients of the whole model are not compared: a proposal whose IoU with a GT box
    sits at the 0.5 threshold can change label between two roundings and move a gradient by
    percents. The heads are checked on fixed inputs instead, the backbone through the RPN losses
    (anchor labels do not depend on the network).
    """
    nchw, nhwc = _pair()
    batch = [make_inputs(seed=0), make_inputs(seed=1)]
    torch.manual_seed(5)
    la = nchw.train()(batch)
    torch.manual_seed(5)  # same anchor/ROI sampling
    lb = nhwc.train()(batch)
    for k in la:
        assert abs(la[k].item() - lb[k].item()) <= 1e-4 * max(abs(la[k].item()), 1e-3), (k, la[k].item(), lb[k].item())
    (la["loss_rpn_cls"] + la["loss_rpn_loc"]).backward()
    (lb["loss_rpn_cls"] + lb["loss_rpn_loc"]).backward()
    names = [
        "backbone.bottom_up.res3.0.conv1.weight",
        "backbone.bottom_up.res4.1.conv2.norm.weight",
        "backbone.fpn_output2.weight",
        "backbone.fpn_lateral5.weight",
        "proposal_generator.rpn_head.conv.weight",
    ]
    ga, gb = _grads(nchw, names), _grads(nhwc, names)
    for n in names:
        assert rel_close(ga[n], gb[n], rel=GRAD_REL), n
    for head, shape in (("box_head", (40, 64, 7, 7)), ("mask_head", (20, 64, 14, 14))):
        ha, hb = getattr(nchw.roi_heads, head), getattr(nhwc.roi_heads, head)
        if head == "mask_head":  # its forward also computes the loss; compare the mask logits
            ha, hb = ha.layers, hb.layers
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        xa = x.clone().requires_grad_()
        xb = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
        ya, yb = ha(xa), hb(xb)
        assert rel_close(ya, yb), head
        g = torch.randn(ya.shape, generator=torch.Generator().manual_seed(2))
        ya.backward(g)
        yb.backward(g)
        assert rel_close(xa.grad, xb.grad, rel=GRAD_REL), head
        module_a, module_b = getattr(nchw.roi_heads, head), getattr(nhwc.roi_heads, head)
        for n, p in module_a.named_parameters():
            assert rel_close(p.grad, dict(module_b.named_parameters())[n].grad, rel=GRAD_REL), f"{head}.{n}"


def test_channels_last_gradients_float64():
    """Backbone, RPN head, box head and mask head in float64 (no oneDNN kernel, no ISA-dependent
    rounding): NCHW and NHWC must give the same gradients to 1e-10, on every CPU."""
    nchw, nhwc = _pair()
    x = nchw.preprocess_image([make_inputs(seed=0), make_inputs(seed=1)]).tensor.double()
    grads = []
    for model, images in ((nchw, x), (nhwc, x.contiguous(memory_format=torch.channels_last))):
        model.double()
        feats = model.backbone(images)
        objectness, deltas = model.proposal_generator.rpn_head([feats[f] for f in ("p2", "p3", "p4", "p5", "p6")])
        g = torch.Generator().manual_seed(3)
        loss = sum((o * torch.randn(o.shape, generator=g).double()).sum() for o in objectness + deltas)
        for head, shape in (("box_head", (40, 64, 7, 7)), ("mask_head", (20, 64, 14, 14))):
            module = getattr(model.roi_heads, head)
            module = module.layers if head == "mask_head" else module
            y = module(
                torch.randn(*shape, generator=g)
                .double()
                .contiguous(memory_format=images.is_contiguous() and torch.contiguous_format or torch.channels_last)
            )
            loss = loss + (y * torch.randn(y.shape, generator=g).double()).sum()
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 50
    for n in grads[0]:
        assert rel_close(grads[0][n], grads[1][n], rel=1e-10), n


def test_channels_last_detections_match():
    nchw, nhwc = _pair()
    x = {k: v for k, v in make_inputs(seed=3).items() if k != "instances"}
    with torch.no_grad():
        a = nchw.eval()([x])[0]["instances"]
        b = nhwc.eval()([x])[0]["instances"]
    assert len(a) == len(b) > 0
    assert torch.equal(a.pred_classes, b.pred_classes)
    assert rel_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert rel_close(a.scores, b.scores)
    assert (a.pred_masks != b.pred_masks).float().mean().item() < 1e-3  # a pixel at 0.5 may flip


def test_memory_format_default_and_bad_value():
    from detgn.config import get_cfg

    assert get_cfg().MODEL.MEMORY_FORMAT == "contiguous"  # detectron2 parity by default
    cfg = small_gn_cfg()
    cfg.MODEL.MEMORY_FORMAT = "nhwc"
    with pytest.raises(ValueError, match="MODEL.MEMORY_FORMAT"):
        build_model(cfg)
