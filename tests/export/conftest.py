"""A small GN Mask R-CNN with deterministic synthetic weights (the parity fixture's rule) and real images."""

import os
import sys

import cv2
import pytest
import torch

from detgn.modeling import build_model

from ..modeling.util import small_gn_cfg

from tests.util import REPO

PARITY = os.path.join(REPO, "tests", "data", "detectron2_parity")
VAL = os.path.join(REPO, "datasets", "nuclei_mini", "val")


def synthetic_state_dict(model):
    """The parity fixture's deterministic weights for every weight and bias; BN statistics keep their initial values."""
    sys.path.insert(0, PARITY)
    try:
        from make_weights import make_tensor
    finally:
        sys.path.remove(PARITY)
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return {k: (v if k.endswith(stats) else make_tensor(k, v.shape)) for k, v in model.state_dict().items()}


def export_cfg():
    cfg = small_gn_cfg(num_classes=3)
    cfg.INPUT.MIN_SIZE_TEST = 224
    cfg.INPUT.MAX_SIZE_TEST = 320
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
    cfg.TEST.DETECTIONS_PER_IMAGE = 50
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 300
    return cfg


def calibrate_batch_norms(model, image_bgr):
    """Set every BN / FrozenBN layer's running statistics to those of its input on one image (in network
    order), so that a BN model with synthetic weights keeps normalised activations and gives detections."""
    from detgn.layers import FrozenBatchNorm2d

    def pre(module, args):
        x = args[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))

    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]
    handles = [m.register_forward_pre_hook(pre) for m in norms]
    try:
        with torch.no_grad():
            model([{"image": torch.from_numpy(image_bgr.transpose(2, 0, 1).copy())}])
    finally:
        for h in handles:
            h.remove()
    return len(norms)


@pytest.fixture(scope="session")
def small_export_model(tmp_path_factory):
    """(cfg with MODEL.WEIGHTS set, built eval model with those weights)."""
    cfg = export_cfg()
    model = build_model(cfg).eval()
    model.load_state_dict(synthetic_state_dict(model), strict=True)
    path = tmp_path_factory.mktemp("weights") / "small_gn.pth"
    torch.save({"model": model.state_dict()}, path)
    cfg.MODEL.WEIGHTS = str(path)
    return cfg, model


@pytest.fixture(scope="session")
def images():
    """Two real images of different sizes (BGR uint8): a nuclei_mini val image and the parity image."""
    first = cv2.imread(os.path.join(VAL, sorted(os.listdir(VAL))[0]), cv2.IMREAD_COLOR)
    second = cv2.imread(os.path.join(PARITY, "image.png"), cv2.IMREAD_COLOR)
    return first, second
