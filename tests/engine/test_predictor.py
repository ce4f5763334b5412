"""DefaultPredictor: BGR uint8 image in, detections at the original size out, equal to calling the model."""

import os

import cv2
import numpy as np
import pytest
import torch

from detgn.config import get_cfg
from detgn.engine import DefaultPredictor

from tests.util import QUICK, REPO


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    from detgn.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 128, 200
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # confident detections from random weights
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([3.0, -3.0]))
    path = tmp_path_factory.mktemp("w") / "w.pth"
    torch.save({"model": model.state_dict()}, path)
    cfg.MODEL.WEIGHTS = str(path)
    return cfg, model.eval()


def test_predictor_resizes_and_returns_original_size(trained_like):
    cfg, model = trained_like
    name = sorted(os.listdir(os.path.join(REPO, "datasets", "nuclei_mini", "val")))[0]
    img = cv2.imread(os.path.join(REPO, "datasets", "nuclei_mini", "val", name), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    out = DefaultPredictor(cfg)(img)["instances"]
    assert out.image_size == (h, w) and len(out) > 0
    assert out.pred_masks.shape[1:] == (h, w) and out.pred_boxes.tensor[:, 2].max() <= w
    # the same as the model on the test-time resized image (short side 128), rescaled to (h, w)
    scale = 128 / min(h, w)
    nh, nw = int(round(h * scale)), int(round(w * scale))
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        ref = model([{"image": torch.as_tensor(resized.transpose(2, 0, 1).copy()), "height": h, "width": w}])[0][
            "instances"
        ]
    assert torch.allclose(out.pred_boxes.tensor, ref.pred_boxes.tensor, atol=1e-3) and torch.equal(
        out.pred_classes, ref.pred_classes
    )


def test_predictor_rgb_config_flips_channels(trained_like):
    cfg, _ = trained_like
    cfg = cfg.clone()
    cfg.INPUT.FORMAT = "RGB"
    img = np.zeros((60, 80, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    pred = DefaultPredictor(cfg)
    seen = {}
    original = pred.model.forward
    pred.model.forward = lambda inputs: (seen.setdefault("x", inputs[0]["image"]), original(inputs))[1]
    pred(img)
    assert seen["x"][2].float().mean() == 255 and seen["x"][0].float().mean() == 0  # RGB: blue is the last channel


def test_predictor_refuses_a_batch_or_a_path(trained_like):
    cfg, _ = trained_like
    pred = DefaultPredictor(cfg)
    with pytest.raises(ValueError, match="one HxWx3 uint8 BGR image"):
        pred("image.png")
    with pytest.raises(ValueError, match="one HxWx3 uint8 BGR image"):
        pred(np.zeros((2, 60, 80, 3), np.uint8))
