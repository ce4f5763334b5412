"""channels_last (NHWC) must compute what the NCHW model computes: features, losses, gradients, detections."""
import pytest
import torch

from detgn.modeling import build_model

from .util import make_inputs, small_gn_cfg


def _pair():
    cfg = small_gn_cfg()
    cfg.MODEL.MEMORY_FORMAT = "contiguous"
    torch.manual_seed(0)
    nchw = build_model(cfg)
    cfg.MODEL.MEMORY_FORMAT = "channels_last"
    nhwc = build_model(cfg)
    nhwc.load_state_dict(nchw.state_dict())
    return nchw, nhwc


def _close(a, b, rel=1e-4):
    scale = max(a.abs().max().item(), 1e-6)
    return (a - b).abs().max().item() <= rel * scale


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
        assert _close(feats_a[k], feats_b[k]), k


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
    names = ["backbone.bottom_up.res3.0.conv1.weight", "backbone.bottom_up.res4.1.conv2.norm.weight", "backbone.fpn_output2.weight",
             "backbone.fpn_lateral5.weight", "proposal_generator.rpn_head.conv.weight"]
    ga, gb = _grads(nchw, names), _grads(nhwc, names)
    for n in names:
        assert _close(ga[n], gb[n], rel=1e-4), n
    for head, shape in (("box_head", (40, 64, 7, 7)), ("mask_head", (20, 64, 14, 14))):
        ha, hb = getattr(nchw.roi_heads, head), getattr(nhwc.roi_heads, head)
        if head == "mask_head":  # its forward also computes the loss; compare the mask logits
            ha, hb = ha.layers, hb.layers
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        xa = x.clone().requires_grad_()
        xb = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
        ya, yb = ha(xa), hb(xb)
        assert _close(ya, yb), head
        g = torch.randn(ya.shape, generator=torch.Generator().manual_seed(2))
        ya.backward(g)
        yb.backward(g)
        assert _close(xa.grad, xb.grad), head
        module_a, module_b = getattr(nchw.roi_heads, head), getattr(nhwc.roi_heads, head)
        for n, p in module_a.named_parameters():
            assert _close(p.grad, dict(module_b.named_parameters())[n].grad), f"{head}.{n}"


def test_channels_last_detections_match():
    nchw, nhwc = _pair()
    x = {k: v for k, v in make_inputs(seed=3).items() if k != "instances"}
    with torch.no_grad():
        a = nchw.eval()([x])[0]["instances"]
        b = nhwc.eval()([x])[0]["instances"]
    assert len(a) == len(b) > 0
    assert torch.equal(a.pred_classes, b.pred_classes)
    assert _close(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert _close(a.scores, b.scores)
    assert (a.pred_masks != b.pred_masks).float().mean().item() < 1e-3  # a pixel at 0.5 may flip


def test_memory_format_default_and_bad_value():
    from detgn.config import get_cfg

    assert get_cfg().MODEL.MEMORY_FORMAT == "contiguous"  # detectron2 parity by default
    cfg = small_gn_cfg()
    cfg.MODEL.MEMORY_FORMAT = "nhwc"
    with pytest.raises(ValueError, match="MODEL.MEMORY_FORMAT"):
        build_model(cfg)
