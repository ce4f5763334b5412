"""Test-time augmentation: detectron2's GeneralizedRCNNWithTTA outputs on the parity image
(tests/data/detectron2_parity_tta: 3 sizes x flip, boxes merged by NMS, masks averaged), the mapper's inputs and
transforms, and the same detections as the plain model when the only augmentation is the test size itself."""

import hashlib
import os
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detgn.config import get_cfg
from detgn.export.verify import match_detections
from detgn.modeling import build_model
from detgn.modeling.test_time_augmentation import DatasetMapperTTA, GeneralizedRCNNWithTTA
from tests.util import REPO

PARITY = os.path.join(REPO, "tests", "data", "detectron2_parity")
TTA = os.path.join(REPO, "tests", "data", "detectron2_parity_tta")


@pytest.fixture(scope="module")
def reference():
    return torch.load(os.path.join(TTA, "outputs.pth"), weights_only=True)


@pytest.fixture(scope="module")
def setup(reference):
    sys.path.insert(0, PARITY)
    try:
        from make_weights import make_weights
    finally:
        sys.path.remove(PARITY)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "GN", "mask_rcnn_R_50_FPN_3x_gn.yaml"))
    cfg.merge_from_list(reference["config"])
    cfg.INPUT.RESIZE_LIBRARY = "pil"  # detectron2 resizes with Pillow: the augmented inputs pixel for pixel
    model = build_model(cfg).eval()
    model.load_state_dict(make_weights([(k, v.shape) for k, v in model.state_dict().items()]), strict=True)
    img = cv2.imread(os.path.join(PARITY, "image.png"), cv2.IMREAD_COLOR)
    assert hashlib.sha256(img.tobytes()).hexdigest() == reference["image_sha256"]
    x = {"image": torch.from_numpy(img.transpose(2, 0, 1).copy()), "height": 384, "width": 512}
    return cfg, model, x


def test_mapper_sizes_flips_and_transforms(setup):
    cfg, _, x = setup
    augmented = DatasetMapperTTA(cfg)(x)
    assert [tuple(a["image"].shape[1:]) for a in augmented] == [
        (320, 427),
        (320, 427),
        (384, 512),
        (384, 512),
        (448, 597),
        (448, 597),
    ]
    flipped = augmented[3]["image"].numpy()
    assert np.array_equal(flipped[:, :, ::-1], augmented[2]["image"].numpy())  # the flip of the same size
    box = np.array([[10.0, 20.0, 110.0, 220.0]], np.float32)
    there = augmented[5]["transforms"].apply_box(box)
    assert np.allclose(augmented[5]["transforms"].inverse().apply_box(there), box, atol=1e-4)
    assert np.allclose(
        there, [[597 - 110 * 597 / 512, 20 * 448 / 384, 597 - 10 * 597 / 512, 220 * 448 / 384]], atol=1e-3
    )


def test_detectron2_parity_tta(reference, setup):
    cfg, model, x = setup
    with torch.no_grad():
        inst = GeneralizedRCNNWithTTA(cfg, model)([x])[0]["instances"]
    assert inst.image_size == (384, 512) and len(inst) == len(reference["scores"])
    pairs = match_detections(
        {"boxes": reference["boxes"].numpy(), "classes": reference["classes"].numpy()},
        {"boxes": inst.pred_boxes.tensor.numpy(), "classes": inst.pred_classes.numpy()},
    )
    assert len(pairs) >= 0.98 * len(reference["boxes"]), f"{len(pairs)} of {len(reference['boxes'])} matched"
    ri, gi = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    score_diff = (reference["scores"][ri] - inst.scores[gi]).abs().max().item()
    assert score_diff <= 1e-3, f"score difference {score_diff:.2e}"
    ref_masks = mask_util.decode(
        [{"size": reference["masks"]["size"], "counts": c.encode()} for c in reference["masks"]["counts"]]
    )
    ious = []
    for i, j in pairs:
        a, b = ref_masks[:, :, i].astype(bool), inst.pred_masks[j].numpy()
        union = np.logical_or(a, b).sum()
        ious.append(np.logical_and(a, b).sum() / union if union else 1.0)
    assert min(ious) >= 0.95 and np.mean(ious) >= 0.99, f"mask IoU min {min(ious):.4f}, mean {np.mean(ious):.4f}"


@pytest.fixture(scope="module")
def tiny():
    """A narrow GN Mask R-CNN (random weights, every proposal kept) on a bundled nuclei image: cheap TTA runs."""
    from tests.util import QUICK, TINY_MODEL

    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(
        TINY_MODEL
        + [
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "0.0",
            "INPUT.MIN_SIZE_TEST",
            "96",
            "TEST.AUG.MIN_SIZES",
            "(80, 96, 128)",
            "TEST.AUG.MAX_SIZE",
            "400",
        ]
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    folder = os.path.join(REPO, "datasets", "nuclei_mini", "val")
    img = cv2.imread(os.path.join(folder, sorted(os.listdir(folder))[0]), cv2.IMREAD_COLOR)
    img = cv2.resize(img, (128, 96))
    x = {"image": torch.from_numpy(img.transpose(2, 0, 1).copy()), "height": 96, "width": 128}
    return cfg, model, x


def test_one_size_without_flip_equals_the_plain_model(tiny):
    """TTA with the test size only and no flip merges one set of detections (NMS again at the same threshold)
    and averages one mask: the plain model's output."""
    cfg, model, x = tiny
    cfg = cfg.clone()
    cfg.TEST.AUG.MIN_SIZES, cfg.TEST.AUG.FLIP = (96,), False
    with torch.no_grad():
        tta = GeneralizedRCNNWithTTA(cfg, model)([x])[0]["instances"]
        plain = model([x])[0]["instances"]
    assert len(plain) > 10
    assert torch.equal(tta.pred_classes, plain.pred_classes) and torch.allclose(tta.scores, plain.scores)
    assert torch.allclose(tta.pred_boxes.tensor, plain.pred_boxes.tensor, atol=1e-4)
    assert torch.equal(tta.pred_masks, plain.pred_masks)


def test_kept_features_give_the_same_result_as_recomputed(tiny):
    """The mask pass reuses the box pass's features within the memory budget: bit for bit the same as computing
    them again (budget 0), with the library's other resize too."""
    cfg, model, x = tiny
    for library in ("opencv", "pil"):
        cfg = cfg.clone()
        cfg.INPUT.RESIZE_LIBRARY = library
        with torch.no_grad():
            kept = GeneralizedRCNNWithTTA(cfg, model)([x])[0]["instances"]
            again = GeneralizedRCNNWithTTA(cfg, model, feature_cache_mb=0)([x])[0]["instances"]
        assert len(kept) > 10
        for f in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
            a, b = kept.get(f), again.get(f)
            a, b = (a.tensor, b.tensor) if f == "pred_boxes" else (a, b)
            assert torch.equal(a, b), f


def test_tta_refused_for_other_architectures():
    from detgn.config.rules import check_config
    from detgn.utils.errors import ConfigValueError

    cfg = get_cfg()
    cfg.TEST.AUG.ENABLED = True
    cfg.MODEL.META_ARCHITECTURE = "ImageNetClassifier"
    with pytest.raises(ConfigValueError, match="TEST.AUG.ENABLED"):
        check_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.TEST.AUG.MIN_SIZES = ()
    with pytest.raises(ConfigValueError, match="TEST.AUG.MIN_SIZES"):
        check_config(cfg)
