import numpy as np
import pytest
import torch

from detgn.config import get_cfg
from detgn.data import DatasetMapper, load_coco_json
from .shapes import make_shapes_dataset
from detgn.data.detection_utils import ImageReadError, SizeMismatchError, read_image
from detgn.data.transforms import (HFlipTransform, ResizeShortestEdge, TransformList, _shortest_edge_size)
from detgn.structures import BitMasks


def test_resize_shortest_edge_rule():
    assert _shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert _shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)
    aug = ResizeShortestEdge((640, 672, 704), 1333, "choice")
    rng = np.random.RandomState(0)
    sizes = {min(aug.get_transform(np.zeros((480, 640, 3), np.uint8), rng).new_h, 10000) for _ in range(30)}
    assert sizes == {640, 672, 704}
    with pytest.raises(ValueError):
        ResizeShortestEdge((1, 2, 3), 100, "range")


def test_flip_twice_is_identity():
    img = np.random.RandomState(0).randint(0, 255, (20, 30, 3)).astype(np.uint8)
    t = TransformList([HFlipTransform(30), HFlipTransform(30)])
    assert (t.apply_image(img) == img).all()
    pts = np.array([[1.5, 2.0], [29.0, 19.0]])
    np.testing.assert_allclose(t.apply_coords(pts), pts)
    box = np.array([[3.0, 4.0, 10.0, 12.0]])
    np.testing.assert_allclose(HFlipTransform(30).apply_box(box), [[20.0, 4.0, 27.0, 12.0]])


def _mapper(is_train, mask_format="polygon", **over):
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = mask_format
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.MIN_SIZE_TEST = 64
    for k, v in over.items():
        cfg.merge_from_list([k, v])
    return DatasetMapper(cfg, is_train)


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
@pytest.mark.parametrize("lsj", [False, True])
def test_boxes_and_masks_stay_aligned_with_image(tmp_path, mask_format, lsj):
    json_file, image_root = make_shapes_dataset(str(tmp_path), num_images=4, seed=3)
    dicts = load_coco_json(json_file, image_root)
    over = {"INPUT.LSJ.ENABLED": "True", "INPUT.LSJ.IMAGE_SIZE": "128"} if lsj else {}
    mapper = _mapper(True, mask_format, **over)
    for seed in range(6):
        out = mapper(dicts[seed % 4], np.random.RandomState(seed))
        img = out["image"].numpy().transpose(1, 2, 0).astype(np.float32)
        inst = out["instances"]
        h, w = img.shape[:2]
        if lsj:
            assert (h, w) == (128, 128)
        gm = inst.gt_masks  # polygon format falls back to bit masks when an image has RLE masks (the discs)
        masks = gm.tensor if isinstance(gm, BitMasks) else BitMasks.from_polygon_masks(gm, h, w).tensor
        brightness = img.mean(axis=2)
        for box, m in zip(inst.gt_boxes.tensor, masks):
            m = m.numpy()
            if m.sum() < 20:
                continue
            # the shape is drawn bright (>= 150) on a dark background (<= 100): the mask lands on it
            assert brightness[m].mean() > 130
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = box.tolist()
            assert abs(xs.min() - x0) <= 2.5 and abs(ys.min() - y0) <= 2.5
            assert abs(xs.max() + 1 - x1) <= 2.5 and abs(ys.max() + 1 - y1) <= 2.5


def test_mapper_drops_crowd_and_emptied_boxes(tmp_path):
    json_file, image_root = make_shapes_dataset(str(tmp_path), num_images=3, seed=2, crowd_every=2)
    dicts = load_coco_json(json_file, image_root)
    mapper = _mapper(True, **{"INPUT.RANDOM_FLIP": "none"})
    for d in dicts:
        out = mapper(d, np.random.RandomState(0))
        assert len(out["instances"]) == sum(1 for a in d["annotations"] if a["iscrowd"] == 0)
    # a crop far away from every shape removes all annotations
    from detgn.data.transforms import CropTransform
    from detgn.data.detection_utils import annotations_to_instances, transform_instance_annotations

    t = TransformList([CropTransform(0, 0, 2, 2)])
    annos = [transform_instance_annotations(a, t, (2, 2)) for a in dicts[0]["annotations"] if a["bbox"][0] > 3 and a["bbox"][1] > 3]
    inst = annotations_to_instances(annos, (2, 2))
    assert inst.gt_boxes.nonempty().sum() == 0


def test_test_mapper_and_format(tmp_path):
    json_file, image_root = make_shapes_dataset(str(tmp_path), num_images=1, seed=4)
    d = load_coco_json(json_file, image_root)[0]
    out = _mapper(False)(d)
    assert out["image"].dtype == torch.uint8 and out["image"].shape[0] == 3
    assert min(out["image"].shape[1:]) == 64 and "instances" not in out and out["height"] == 96
    bgr = read_image(d["file_name"], "BGR")
    rgb = read_image(d["file_name"], "RGB")
    assert (bgr[:, :, ::-1] == rgb).all()


def test_exif_orientation_applied(tmp_path):
    from PIL import Image

    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=100)
    out = read_image(str(p), "RGB")
    assert out.shape[:2] == (20, 10)
    assert out[:8].mean() > 200 and out[12:].mean() < 50  # white ends on top


def test_unreadable_and_mismatched_images(tmp_path):
    json_file, image_root = make_shapes_dataset(str(tmp_path), num_images=2, seed=5)
    dicts = load_coco_json(json_file, image_root)
    open(dicts[0]["file_name"], "wb").write(b"not a png")
    with pytest.raises(ImageReadError, match="shape_0000.png"):
        _mapper(True)(dicts[0], np.random.RandomState(0))
    d = dict(dicts[1])
    d["height"] = 50
    with pytest.raises(SizeMismatchError, match="image id 2"):
        _mapper(True)(d, np.random.RandomState(0))


def test_transforms_are_fvcores_and_invert():
    """The augmentations build on fvcore's Transform; their composition inverts back to the input points."""
    import fvcore.transforms.transform as fvt

    from detgn.data.transforms import FixedSizeCrop, RandomFlip, ResizeScale, apply_augmentations

    img = np.random.RandomState(0).randint(0, 255, (90, 120, 3)).astype(np.uint8)
    augs = [ResizeScale(0.5, 1.5, 64, 64), FixedSizeCrop((64, 64)), RandomFlip(prob=1.0)]
    out, t = apply_augmentations(augs, img, np.random.RandomState(3))
    assert out.shape == (64, 64, 3) and isinstance(t, fvt.TransformList)
    assert all(isinstance(x, fvt.Transform) for x in t.transforms)
    assert any(isinstance(x, fvt.HFlipTransform) for x in t.transforms)
    pts = np.array([[10.0, 20.0], [33.5, 7.25]])
    np.testing.assert_allclose(t.inverse().apply_coords(t.apply_coords(pts.copy())), pts, atol=1e-9)


def test_crop_shifts_polygons_without_clipping():
    from detgn.data.transforms import CropTransform

    poly = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    (out,) = CropTransform(5, 2, 4, 4).apply_polygons([poly])
    np.testing.assert_allclose(out, [[-5.0, -2.0], [5.0, -2.0], [5.0, 8.0]])
    np.testing.assert_allclose(poly[1], [10.0, 0.0])  # the input is not modified in place


def test_resize_library_pil_is_pillows_bilinear_everywhere_from_the_config():
    """INPUT.RESIZE_LIBRARY pil: the config's resizes (train, test) give Pillow's pixels (detectron2's inputs), opencv
    (the default) OpenCV's; masks use each library's nearest; exported models refuse pil."""
    import cv2
    import numpy as np
    from PIL import Image

    from detgn.config import get_cfg
    from detgn.data.transforms import apply_augmentations, build_augmentation
    from detgn.export import check_exportable
    from detgn.utils.errors import UserInputError

    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (60, 80, 3), dtype=np.uint8)
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 45, 1000
    for lib, expected in (
        ("opencv", cv2.resize(img, (60, 45), interpolation=cv2.INTER_LINEAR)),
        ("pil", np.asarray(Image.fromarray(img).resize((60, 45), Image.BILINEAR))),
    ):
        cfg.INPUT.RESIZE_LIBRARY = lib
        out, tfms = apply_augmentations(build_augmentation(cfg, is_train=False), img, np.random.RandomState(0))
        assert np.array_equal(out, expected), lib
        seg = (rng.rand(60, 80) > 0.5).astype(np.uint8)
        assert tfms.apply_segmentation(seg).shape == (45, 60)
    assert not np.array_equal(
        cv2.resize(img, (60, 45), interpolation=cv2.INTER_LINEAR),
        np.asarray(Image.fromarray(img).resize((60, 45), Image.BILINEAR)),
    )  # the two libraries do differ when shrinking: the key matters
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (45,), 1000
    cfg.INPUT.RANDOM_FLIP = "none"
    out, _ = apply_augmentations(build_augmentation(cfg, is_train=True), img, np.random.RandomState(0))
    assert np.array_equal(out, np.asarray(Image.fromarray(img).resize((60, 45), Image.BILINEAR)))
    with pytest.raises(UserInputError, match="INPUT.RESIZE_LIBRARY"):
        check_exportable(cfg, "torchscript")


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_crops_and_lsj_recompute_each_box_from_its_cut_mask(tmp_path, mask_format):
    """detectron2's recompute_boxes: after a crop the box is the tight box of what is left of the mask, not the
    clipped original box (which overhangs where the crop cut the object)."""
    json_file, image_root = make_shapes_dataset(str(tmp_path), num_images=4, seed=5)
    dicts = load_coco_json(json_file, image_root)
    mapper = _mapper(True, mask_format, **{"INPUT.LSJ.ENABLED": "True", "INPUT.LSJ.IMAGE_SIZE": "48"})
    assert mapper.recompute_boxes and not _mapper(True, mask_format).recompute_boxes
    assert _mapper(True, mask_format, **{"INPUT.CROP.ENABLED": "True"}).recompute_boxes
    plain = _mapper(True, mask_format, **{"INPUT.LSJ.ENABLED": "True", "INPUT.LSJ.IMAGE_SIZE": "48"})
    plain.recompute_boxes = False
    checked, overhanging = 0, 0
    for seed in range(8):
        inst = mapper(dicts[seed % 4], np.random.RandomState(seed))["instances"]
        before = plain(dicts[seed % 4], np.random.RandomState(seed))["instances"]
        if len(inst) == 0:
            continue
        assert torch.equal(inst.gt_boxes.tensor, inst.gt_masks.get_bounding_boxes().tensor)
        checked += len(inst)
        if len(before) == len(inst):
            overhanging += int((before.gt_boxes.area() > inst.gt_boxes.area() + 1).sum())
    assert checked > 0 and overhanging > 0  # some crops cut an object: its old box was larger than what is left
