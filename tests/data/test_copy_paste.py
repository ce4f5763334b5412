"""detgn/data/copy_paste.py: the mask and box bookkeeping on constructed masks, the alignment of a source of another
size, determinism per sample through the loader, and the config's refusals."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from detgn.config import get_cfg
from detgn.data import CopyPasteMapper, DatasetMapper, load_coco_json
from detgn.data.copy_paste import copy_paste
from detgn.structures import BitMasks, Boxes, Instances, PolygonMasks

from .shapes import make_shapes_dataset


def _sample(value, size, boxes, classes, polygons=False):
    """A mapped training dict: an image filled with `value`, one rectangle mask per (x0, y0, x1, y1) box."""
    h, w = size
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    inst = Instances(size, gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    if polygons:
        inst.gt_masks = PolygonMasks([[np.array([x0, y0, x1, y0, x1, y1, x0, y1], float)] for x0, y0, x1, y1 in boxes])
    else:
        inst.gt_masks = BitMasks(masks)
    return {"image": torch.full((3, h, w), value, dtype=torch.uint8), "instances": inst}


@pytest.mark.parametrize("polygons", [False, True])
def test_occluded_masks_are_cut_boxes_follow_and_covered_instances_go(polygons):
    target = _sample(10, (20, 20), [(0, 0, 10, 10), (12, 12, 16, 16), (17, 0, 20, 3)], [0, 1, 2], polygons)
    source = _sample(200, (20, 20), [(5, 0, 15, 10), (11, 11, 17, 17), (0, 15, 4, 19)], [3, 4, 5], polygons)
    out = copy_paste(target, source, selected=[0, 1])
    covered = torch.zeros(20, 20, dtype=torch.bool)
    covered[0:10, 5:15] = covered[11:17, 11:17] = True
    assert torch.equal(out["image"][0] == 200, covered)  # the source's pixels exactly where its pasted masks are
    inst = out["instances"]
    # target: A cut to its left half, B fully covered and dropped, C untouched; then the pasted source 0 and 1
    assert inst.gt_classes.tolist() == [0, 2, 3, 4]
    assert inst.gt_boxes.tensor.tolist() == [[0, 0, 5, 10], [17, 0, 20, 3], [5, 0, 15, 10], [11, 11, 17, 17]]
    assert isinstance(inst.gt_masks, BitMasks) and int(inst.gt_masks.tensor[0].sum()) == 50
    assert not (inst.gt_masks.tensor[0] & covered).any()
    # the inputs are left as they were
    assert int((target["image"] == 200).sum()) == 0 and len(target["instances"]) == 3
    # a visible area below the threshold drops partly covered and small instances too (A: 50 pixels left, C: 9)
    assert copy_paste(target, source, selected=[0, 1], min_visible_area=9)["instances"].gt_classes.tolist() == [0, 2, 3, 4]
    assert copy_paste(target, source, selected=[0, 1], min_visible_area=10)["instances"].gt_classes.tolist() == [0, 3, 4]
    assert copy_paste(target, source, selected=[0, 1], min_visible_area=51)["instances"].gt_classes.tolist() == [3, 4]
    assert copy_paste(target, source, selected=[]) is target


def test_a_source_of_another_size_is_aligned_top_left_and_cut():
    target = _sample(10, (10, 12), [(0, 0, 4, 4)], [0])
    source = _sample(200, (16, 8), [(6, 6, 8, 14), (0, 12, 8, 16)], [1, 2])  # the second lies below the target
    out = copy_paste(target, source, selected=[0, 1])
    assert out["image"].shape == (3, 10, 12)
    assert out["instances"].gt_classes.tolist() == [0, 1]  # the one outside the target's rows is not pasted
    assert out["instances"].gt_boxes.tensor.tolist() == [[0, 0, 4, 4], [6, 6, 8, 10]]
    assert int((out["image"][0] == 200).sum()) == 2 * 4


def _mapper_cfg(**over):
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    for k, v in over.items():
        cfg.merge_from_list([k, v])
    return cfg


def test_deterministic_per_sample_and_the_target_as_without_copy_paste(tmp_path):
    json_file, image_root = make_shapes_dataset(str(tmp_path), num_images=5, seed=7)
    dicts = load_coco_json(json_file, image_root)
    plain = DatasetMapper(_mapper_cfg(), True)
    mapper = CopyPasteMapper(DatasetMapper(_mapper_cfg(), True), dicts)
    grew = 0
    for seed in range(6):
        a = mapper(dicts[seed % 5], np.random.RandomState(seed))
        b = mapper(dicts[seed % 5], np.random.RandomState(seed))
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        before = plain(dicts[seed % 5], np.random.RandomState(seed))
        assert a["image"].shape == before["image"].shape  # the target's own augmentations are unchanged
        if len(a["instances"]) > len(before["instances"]):  # pasted: every box is its mask's tight box
            grew += 1
            masks = a["instances"].gt_masks.tensor
            assert torch.equal(a["instances"].gt_boxes.tensor, BitMasks(masks).get_bounding_boxes().tensor)
    assert grew > 0
    never = CopyPasteMapper(DatasetMapper(_mapper_cfg(), True), dicts, prob=0.0)
    same = never(dicts[0], np.random.RandomState(3))
    assert torch.equal(same["image"], plain(dicts[0], np.random.RandomState(3))["image"])


def test_the_training_loader_pastes_when_configured(tmp_path):
    from detgn.data import build_detection_train_loader

    json_file, image_root = make_shapes_dataset(str(tmp_path), num_images=4, seed=1)
    dicts = load_coco_json(json_file, image_root)
    cfg = _mapper_cfg(**{"INPUT.COPY_PASTE.ENABLED": "True", "SOLVER.IMS_PER_BATCH": "2", "DATALOADER.NUM_WORKERS": "0"})
    loader = build_detection_train_loader(cfg, dataset=dicts, seed=0)
    assert isinstance(loader.dataset.mapper, CopyPasteMapper)
    batch = next(iter(loader))
    assert len(batch) == 2 and all(isinstance(d["instances"].gt_masks, BitMasks) for d in batch)


@pytest.mark.parametrize(
    "opts, message",
    [
        (["INPUT.COPY_PASTE.ENABLED", "True", "MODEL.MASK_ON", "False"], "without MODEL.MASK_ON"),
        (["INPUT.COPY_PASTE.PROB", "0.5"], "INPUT.COPY_PASTE.PROB = 0.5: must be its default 1.0 unless"),
        (["INPUT.COPY_PASTE.ENABLED", "True", "INPUT.COPY_PASTE.PROB", "1.5"], "PROB = 1.5: must be a number in"),
        (["INPUT.COPY_PASTE.ENABLED", "True", "INPUT.COPY_PASTE.MAX_OBJECTS", "0"], "MAX_OBJECTS = 0"),
    ],
)
def test_copy_paste_keys_are_refused_when_read(opts, message):
    from detgn.jobs import ConfigError, setup_cfg
    from tests.util import QUICK

    with pytest.raises(ConfigError, match=message):
        setup_cfg(SimpleNamespace(config_file=QUICK, opts=opts))
