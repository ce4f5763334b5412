"""detgn/data/transforms.py AugInput and the DatasetMapper's use of it: an augmentation can see the boxes."""

import numpy as np
import pytest

from detgn.config import get_cfg
from detgn.data import DatasetMapper, load_coco_json
from detgn.data.transforms import (
    AugInput,
    Augmentation,
    CropTransform,
    NoOpTransform,
    RandomCropWithInstance,
    ResizeShortestEdge,
)
from detgn.structures import BoxMode

from .shapes import make_shapes_dataset


class RecordBoxes(Augmentation):
    """Sees the image and the boxes as the augmentations before it left them; changes nothing."""

    input_args = ("image", "boxes")

    def __init__(self):
        self.seen = []

    def get_transform(self, image, boxes, rng):
        self.seen.append((image.shape[:2], boxes.copy()))
        return NoOpTransform()


def _xyxy(record):
    return np.array(
        [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"] if not a["iscrowd"]]
    ).reshape(-1, 4)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    json_file, image_root = make_shapes_dataset(str(tmp_path_factory.mktemp("shapes")), num_images=4, seed=5)
    return load_coco_json(json_file, image_root)


def test_an_augmentation_sees_the_boxes_of_the_image_it_gets(records):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (192,)  # 96x128 images -> 192x256: boxes x 2
    record = records[0]
    recorder = RecordBoxes()
    mapper = DatasetMapper(cfg, True, augmentations=[ResizeShortestEdge((192,), 1000, "choice"), recorder])
    out = mapper(record, np.random.RandomState(0))
    ((hw, boxes),) = recorder.seen
    assert hw == (192, 256) == tuple(out["image"].shape[1:])
    np.testing.assert_allclose(boxes, _xyxy(record) * 2, rtol=1e-6)
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor.numpy(), boxes, rtol=1e-5)


def test_random_crop_with_instance_keeps_the_centre_of_a_box(records):
    aug = RandomCropWithInstance("absolute", (40, 40))
    for seed in range(40):
        record = records[seed % len(records)]
        boxes = _xyxy(record)
        aug_input = AugInput(np.zeros((96, 128, 3), np.uint8), boxes=boxes)
        (crop,) = aug_input.apply_augmentations([aug], np.random.RandomState(seed)).transforms
        assert isinstance(crop, CropTransform) and aug_input.image.shape == (40, 40, 3)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside = (crop.x0 <= cx) & (cx < crop.x0 + 40) & (crop.y0 <= cy) & (cy < crop.y0 + 40)
        assert inside.any(), (seed, crop.x0, crop.y0, boxes)
        np.testing.assert_allclose(aug_input.boxes, boxes - [crop.x0, crop.y0, crop.x0, crop.y0])
    # no box: a plain random crop of the same size
    empty = AugInput(np.zeros((96, 128, 3), np.uint8), boxes=np.zeros((0, 4)))
    empty.apply_augmentations([aug], np.random.RandomState(0))
    assert empty.image.shape == (40, 40, 3)


def test_the_mapper_with_an_instance_crop_always_keeps_an_instance(records):
    cfg = get_cfg()
    mapper = DatasetMapper(cfg, True, augmentations=[RandomCropWithInstance("absolute", (32, 32))])
    kept = [len(mapper(records[s % 4], np.random.RandomState(s))["instances"]) for s in range(12)]
    assert min(kept) >= 1


def test_an_augmentation_that_needs_boxes_refuses_an_input_without_them():
    with pytest.raises(ValueError, match="RecordBoxes needs the input 'boxes'"):
        AugInput(np.zeros((8, 8, 3), np.uint8)).apply_augmentations([RecordBoxes()], np.random.RandomState(0))
