import math

import torch

from detgn.layers.mask_ops import paste_masks_in_image
from detgn.modeling.anchor_generator import DefaultAnchorGenerator
from detgn.modeling.box_regression import Box2BoxTransform
from detgn.modeling.matcher import Matcher
from detgn.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detgn.modeling.sampling import subsample_labels
from detgn.structures import Boxes


def test_cell_anchors_hand_computed():
    cell = DefaultAnchorGenerator.generate_cell_anchors(sizes=(32,), aspect_ratios=(0.5, 1.0, 2.0))
    w = math.sqrt(32 * 32 / 0.5)
    h = 0.5 * w
    expected = torch.tensor([[-w / 2, -h / 2, w / 2, h / 2], [-16, -16, 16, 16], [-h / 2, -w / 2, h / 2, w / 2]])
    torch.testing.assert_close(cell, expected, rtol=1e-5, atol=1e-5)


def test_grid_anchors_order_and_offset():
    gen = DefaultAnchorGenerator(sizes=[[32], [64]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[4, 8], offset=0.0)
    feats = [torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 2)]
    anchors = gen(feats)
    assert [len(a) for a in anchors] == [2 * 3 * 3, 1 * 2 * 3]
    a = anchors[0].tensor
    # location-major: anchors 3..5 are at x = 4, y = 0
    torch.testing.assert_close(a[4], torch.tensor([4.0 - 16, -16, 4.0 + 16, 16]))
    # third row of locations starts at y = 4 (index 3 * 3 = 9)
    torch.testing.assert_close(a[10], torch.tensor([-16.0, 4.0 - 16, 16, 4.0 + 16]))
    assert gen.num_anchors == [3, 3]
    assert not gen.state_dict()  # buffers are not persistent


def test_box_transform_roundtrip_and_clamp():
    t = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 50.0, 25.0]])
    dst = torch.tensor([[1.0, 2.0, 12.0, 18.0], [0.0, 0.0, 100.0, 40.0]])
    deltas = t.get_deltas(src, dst)
    # dx for box 0: 10 * ((1 + 5.5) - (0 + 5)) / 10 = 1.5
    assert abs(deltas[0, 0].item() - 1.5) < 1e-5
    assert abs(deltas[0, 2].item() - 5 * math.log(11 / 10)) < 1e-5
    torch.testing.assert_close(t.apply_deltas(deltas, src), dst, rtol=1e-5, atol=1e-4)
    huge = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    out = t.apply_deltas(huge, src[:1])
    assert torch.isfinite(out).all()
    assert abs((out[0, 2] - out[0, 0]).item() - 10 * 1000 / 16) < 1e-2


def test_matcher_thresholds_and_low_quality():
    m = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    iou = torch.tensor([[0.1, 0.5, 0.8, 0.2], [0.25, 0.2, 0.1, 0.0]])
    matches, labels = m(iou)
    assert matches.tolist() == [1, 0, 0, 0]
    # pred 0: best IoU 0.25 < 0.3 but it is GT 1's best -> positive; pred 1: 0.5 ignored
    assert labels.tolist() == [1, -1, 1, 0]
    m2 = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=False)
    assert m2(iou)[1].tolist() == [0, -1, 1, 0]
    matches, labels = m2(torch.zeros(0, 5))
    assert labels.tolist() == [0] * 5


def test_subsample_labels_limits():
    torch.manual_seed(0)
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 5)
    pos, neg = subsample_labels(labels, 16, 0.25, 0)
    assert len(pos) == 4 and len(neg) == 12
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()


def test_pooler_level_assignment_hand_computed():
    # sqrt(area) 224 -> level 4; 112 -> 3; 56 -> 2; 20 -> clamp 2; 448 -> 5; 2000 -> clamp 5
    sizes = [224, 112, 56, 20, 448, 2000, 223]
    boxes = Boxes(torch.tensor([[0.0, 0.0, s, s] for s in sizes]))
    levels = assign_boxes_to_levels([boxes], 2, 5) + 2
    assert levels.tolist() == [4, 3, 2, 2, 5, 5, 3]


def test_pooler_reads_the_assigned_level():
    pooler = ROIPooler(2, scales=[1 / 4, 1 / 8], sampling_ratio=0, pooler_type="ROIAlignV2")
    feats = [torch.full((1, 1, 64, 64), 1.0), torch.full((1, 1, 32, 32), 2.0)]
    boxes = Boxes(torch.tensor([[0.0, 0.0, 30.0, 30.0], [0.0, 0.0, 200.0, 200.0]]))
    out = pooler(feats, [boxes])
    assert out.shape == (2, 1, 2, 2)
    assert out[0].mean().item() == 1.0 and out[1].mean().item() == 2.0


def _reference_paste(mask, box, h, w):
    """Straightforward per-pixel bilinear sampling (align_corners=False) of an MxM mask."""
    m = mask.shape[-1]
    out = torch.zeros(h, w)
    x0, y0, x1, y1 = box.tolist()
    for y in range(h):
        for x in range(w):
            u = ((x + 0.5) - x0) / (x1 - x0) * m - 0.5
            v = ((y + 0.5) - y0) / (y1 - y0) * m - 0.5
            iu, iv = math.floor(u), math.floor(v)
            fu, fv = u - iu, v - iv
            val = 0.0
            for dy, wy in ((0, 1 - fv), (1, fv)):
                for dx, wx in ((0, 1 - fu), (1, fu)):
                    yy, xx = iv + dy, iu + dx
                    if 0 <= yy < m and 0 <= xx < m:
                        val += wy * wx * mask[yy, xx].item()
            out[y, x] = val
    return out


def test_paste_masks_matches_reference():
    torch.manual_seed(0)
    masks = torch.rand(3, 7, 7)
    boxes = torch.tensor([[2.0, 3.0, 15.5, 12.0], [0.0, 0.0, 20.0, 18.0], [10.3, 4.2, 19.9, 17.7]])
    h, w = 18, 20
    probs = paste_masks_in_image(masks, boxes, (h, w), threshold=-1).float() / 255
    for i in range(3):
        ref = _reference_paste(masks[i], boxes[i], h, w)
        assert (probs[i] - ref).abs().max() < 1.5 / 255
        binary = paste_masks_in_image(masks[i : i + 1], boxes[i : i + 1], (h, w))
        assert ((binary[0] != (ref >= 0.5)).float().sum()) <= 2  # ties at exactly 0.5 may differ


def test_paste_chunked_full_image_path_equals_per_box_path():
    """The GPU strategy (full-image chunks bounded in bytes) gives the CPU per-box result exactly,
    whatever the chunking: 100 masks at 800x1333 in 1, 7 and 100 chunks."""
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(100, 1, 28, 28, generator=g)
    boxes = torch.rand(100, 4, generator=g) * 600
    boxes[:, 2:] = boxes[:, :2] + 5 + torch.rand(100, 2, generator=g) * 400
    boxes[0] = torch.tensor([-30.0, -20.0, 1400.0, 900.0])  # larger than the image
    ref = paste_masks_in_image(masks, boxes, (800, 1333))
    assert ref.shape == (100, 800, 1333) and ref.dtype == torch.bool and ref.any(dim=(1, 2)).all()
    one_mask = 800 * 1333 * 4
    for chunk_bytes in (100 * one_mask, 15 * one_mask, one_mask):
        got = paste_masks_in_image(masks, boxes, (800, 1333), chunk_bytes=chunk_bytes)
        assert torch.equal(got, ref), chunk_bytes
    # soft masks agree inside each box; beyond it the per-box path stops 1 px out (as detectron2's CPU
    # path does) while full-image sampling fades the edge cell out over half a cell (all below 0.5)
    soft_full = paste_masks_in_image(masks[1:6], boxes[1:6], (800, 1333), threshold=-1, chunk_bytes=2 * one_mask)
    soft_box = paste_masks_in_image(masks[1:6], boxes[1:6], (800, 1333), threshold=-1)
    for i, (x0, y0, x1, y1) in enumerate(boxes[1:6].tolist()):
        inside = (slice(i, i + 1), slice(int(y0) + 1, int(y1)), slice(int(x0) + 1, int(x1)))
        assert torch.equal(soft_full[inside], soft_box[inside])
    assert (soft_full.float() - soft_box.float()).abs().max() <= 128  # outside: below the 0.5 threshold


def test_anchor_generators_come_from_a_registry():
    """MODEL.ANCHOR_GENERATOR.NAME picks a registered generator (a user's own too); an unknown name is refused."""
    import pytest

    from detgn.config import get_cfg
    from detgn.layers import ShapeSpec
    from detgn.modeling import ANCHOR_GENERATOR_REGISTRY, DefaultAnchorGenerator, build_anchor_generator
    from detgn.utils.errors import ConfigValueError

    @ANCHOR_GENERATOR_REGISTRY.register()
    class HalfOffsetAnchors(DefaultAnchorGenerator):
        pass

    try:
        cfg = get_cfg()
        shapes = [ShapeSpec(channels=8, stride=s) for s in (4, 8, 16, 32, 64)]
        assert type(build_anchor_generator(cfg, shapes)) is DefaultAnchorGenerator
        cfg.MODEL.ANCHOR_GENERATOR.NAME = "HalfOffsetAnchors"
        assert type(build_anchor_generator(cfg, shapes)) is HalfOffsetAnchors
        cfg.MODEL.ANCHOR_GENERATOR.NAME = "RotatedAnchorGenerator"
        with pytest.raises(
            ConfigValueError, match="RotatedAnchorGenerator' is not registered; registered: .*DefaultAnchorGenerator"
        ):
            build_anchor_generator(cfg, shapes)
    finally:
        ANCHOR_GENERATOR_REGISTRY._obj_map.pop("HalfOffsetAnchors")
