import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detgn.structures import BitMasks, Boxes, BoxMode, ImageList, Instances, PolygonMasks, pairwise_iou


def test_boxes_area_clip_nonempty_scale():
    b = Boxes(torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 5.0, 8.0], [-5.0, -5.0, 50.0, 50.0]]))
    assert b.area().tolist() == [200.0, 0.0, 3025.0]
    assert b.nonempty().tolist() == [True, False, True]
    b.clip((30, 40))
    assert b.tensor[2].tolist() == [0.0, 0.0, 40.0, 30.0]
    b.scale(2.0, 0.5)
    assert b.tensor[0].tolist() == [0.0, 0.0, 20.0, 10.0]
    assert len(Boxes(torch.zeros(0))) == 0
    with pytest.raises(ValueError):
        Boxes(torch.zeros(3, 5))


def test_pairwise_iou_hand_computed():
    a = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    b = Boxes(
        torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0], [3.0, 3.0, 3.0, 3.0]])
    )
    iou = pairwise_iou(a, b)
    torch.testing.assert_close(iou, torch.tensor([[50 / 150, 0.0, 1.0, 0.0]]))


def test_boxmode_convert():
    assert BoxMode.convert([1, 2, 3, 4], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) == [1, 2, 4, 6]
    arr = np.array([[1.0, 2.0, 4.0, 6.0]])
    np.testing.assert_allclose(BoxMode.convert(arr, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS), [[1, 2, 3, 4]])


def test_image_list_pads_to_divisibility():
    a = torch.ones(3, 5, 7)
    b = torch.ones(3, 9, 4) * 2
    il = ImageList.from_tensors([a, b], size_divisibility=8)
    assert il.tensor.shape == (2, 3, 16, 8)
    assert il.image_sizes == [(5, 7), (9, 4)]
    assert il.tensor[0, :, 5:].abs().sum() == 0 and il.tensor[0, :, :, 7:].abs().sum() == 0
    torch.testing.assert_close(il[1], b)


def test_instances_index_cat_and_errors():
    inst = Instances((10, 20), scores=torch.tensor([0.1, 0.9, 0.5]), pred_boxes=Boxes(torch.rand(3, 4)))
    assert len(inst) == 3
    sub = inst[inst.scores > 0.3]
    assert len(sub) == 2 and sub.scores.tolist() == pytest.approx([0.9, 0.5])
    both = Instances.cat([inst, sub])
    assert len(both) == 5 and both.pred_boxes.tensor.shape == (5, 4)
    with pytest.raises(ValueError):
        inst.labels = torch.zeros(2)
    with pytest.raises(AttributeError, match="missing_field"):
        _ = inst.missing_field
    assert len(inst[1]) == 1


def _square_polygon(x0, y0, x1, y1):
    return [np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)]


def test_polygon_rasterise_and_rle_roundtrip():
    poly = PolygonMasks([_square_polygon(2, 3, 12, 9)])
    bm = BitMasks.from_polygon_masks(poly, 20, 30)
    assert bm.tensor.shape == (1, 20, 30)
    area = bm.tensor.sum().item()
    assert abs(area - 60) <= 12  # pycocotools rasterisation of a 10x6 square
    rles = bm.to_rles()
    back = mask_util.decode(rles[0]).astype(bool)
    assert (back == bm.tensor[0].numpy()).all()
    box = bm.get_bounding_boxes().tensor[0].tolist()
    assert box[0] == pytest.approx(2, abs=1) and box[2] == pytest.approx(12, abs=1)
    with pytest.raises(ValueError, match="at least 3"):
        PolygonMasks([[np.array([0.0, 0.0, 1.0, 1.0])]])


def test_crop_and_resize_polygon_and_bitmask_agree():
    poly = PolygonMasks([_square_polygon(10, 10, 30, 30)])
    bm = BitMasks.from_polygon_masks(poly, 64, 64)
    # the box is the left half of the square plus as much empty space on the left
    box = torch.tensor([[0.0, 10.0, 20.0, 30.0]])
    p = poly.crop_and_resize(box, 28)
    b = bm.crop_and_resize(box, 28)
    assert p.shape == (1, 28, 28) and b.shape == (1, 28, 28)
    assert p[0, :, :12].sum() == 0 and p[0, :, 16:].mean() > 0.95
    assert (p != b).float().mean() < 0.08
    assert PolygonMasks([]).crop_and_resize(torch.zeros(0, 4), 28).shape == (0, 28, 28)


def test_masks_indexing():
    bm = BitMasks(torch.zeros(3, 4, 5, dtype=torch.bool))
    assert len(bm[torch.tensor([True, False, True])]) == 2
    poly = PolygonMasks([_square_polygon(0, 0, 1, 1)] * 3)
    assert len(poly[torch.tensor([0, 2])]) == 2
    assert len(PolygonMasks.cat([poly, poly[0]])) == 4
