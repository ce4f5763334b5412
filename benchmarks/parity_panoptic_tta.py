"""The Panoptic FPN and test-time augmentation parity figures (tests/modeling/test_detectron2_parity.py,
tests/modeling/test_tta.py) as numbers:

    python benchmarks/parity_panoptic_tta.py

Panoptic FPN R101 GN Cascade (deformable convs off): detections matched and max score difference, semantic logits
max |diff| / abs_max, argmax agreement where detectron2's top two logits differ by > 1e-3, panoptic segments
matched and the share of pixels carrying the matched segment. TTA (GN Mask R-CNN R50, 3 sizes x flip): detections
matched, max score difference, lowest and mean mask IoU, with each resize library.
"""

import hashlib
import os
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from detgn.config import get_cfg  # noqa: E402
from detgn.export.verify import match_detections  # noqa: E402
from detgn.modeling import build_model  # noqa: E402
from detgn.modeling.test_time_augmentation import GeneralizedRCNNWithTTA  # noqa: E402
from tests.modeling.test_detectron2_parity import FIXTURE, PANOPTIC_FIXTURE, _model  # noqa: E402

TTA_FIXTURE = os.path.join(REPO, "tests", "data", "detectron2_parity_tta")


def _detections(reference, inst):
    pairs = match_detections(
        {"boxes": reference["boxes"].numpy(), "classes": reference["classes"].numpy()},
        {"boxes": inst.pred_boxes.tensor.numpy(), "classes": inst.pred_classes.numpy()},
    )
    ri, gi = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    diff = (reference["scores"][ri] - inst.scores[gi]).abs().max().item() if pairs else float("nan")
    ref_masks = mask_util.decode(
        [{"size": reference["masks"]["size"], "counts": c.encode()} for c in reference["masks"]["counts"]]
    )
    ious = []
    for i, j in pairs:
        a, b = ref_masks[:, :, i].astype(bool), inst.pred_masks[j].numpy()
        ious.append(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))
    return f"{len(pairs)}/{len(reference['boxes'])} matched, scores within {diff:.1e}, mask IoU min {min(ious):.4f} mean {np.mean(ious):.4f}"


def panoptic(image):
    ref = torch.load(os.path.join(PANOPTIC_FIXTURE, "outputs.pth"), weights_only=True)
    model = _model(ref, "contiguous", os.path.join("Misc", "panoptic_fpn_R_101_dconv_cascade_gn_3x.yaml"))
    with torch.no_grad():
        out = model([{"image": image, "height": 384, "width": 512}])[0]
    print("panoptic: detections", _detections(ref, out["instances"]))
    sem, rs = out["sem_seg"], ref["sem_seg"]
    err = (sem[:, ::8, ::8] - rs["logits_slice"]).abs().max().item() / rs["abs_max"].item()
    top2 = sem.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 1e-3
    agree = (sem.argmax(0)[decided] == rs["argmax"].long()[decided]).float().mean().item()
    print(
        f"panoptic: semantic logits max |diff| / abs_max {err:.1e}; argmax equal on {agree:.4%} of the "
        f"{decided.float().mean().item():.2%} decided pixels, on {(sem.argmax(0) == rs['argmax'].long()).float().mean().item():.4%} of all"
    )
    pan, segs = out["panoptic_seg"]
    rp = ref["panoptic_seg"].long()
    same = sum(
        (g["isthing"], g["category_id"]) == (w["isthing"], w["category_id"])
        and ((pan == g["id"]) & (rp == w["id"])).sum().item()
        / max(((pan == g["id"]) | (rp == w["id"])).sum().item(), 1)
        > 0.99
        for g, w in zip(segs, ref["segments_info"])
    )
    carried = sum(((pan == g["id"]) & (rp == w["id"])).sum().item() for g, w in zip(segs, ref["segments_info"]))
    carried += ((pan == 0) & (rp == 0)).sum().item()
    print(
        f"panoptic: {same}/{len(ref['segments_info'])} segments matched in order (IoU > 0.99); "
        f"{carried / pan.numel():.4%} of pixels carry the matched segment"
    )


def tta(image_u8):
    ref = torch.load(os.path.join(TTA_FIXTURE, "outputs.pth"), weights_only=True)
    sys.path.insert(0, FIXTURE)
    from make_weights import make_weights

    for library in ("opencv", "pil"):
        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(REPO, "configs", "GN", "mask_rcnn_R_50_FPN_3x_gn.yaml"))
        cfg.merge_from_list(ref["config"] + ["INPUT.RESIZE_LIBRARY", library])
        model = build_model(cfg).eval()
        model.load_state_dict(make_weights([(k, v.shape) for k, v in model.state_dict().items()]))
        with torch.no_grad():
            inst = GeneralizedRCNNWithTTA(cfg, model)([{"image": image_u8, "height": 384, "width": 512}])[0][
                "instances"
            ]
        print(f"TTA, INPUT.RESIZE_LIBRARY {library}: {_detections(ref, inst)}")


def main():
    img = cv2.imread(os.path.join(FIXTURE, "image.png"), cv2.IMREAD_COLOR)
    print("image sha256", hashlib.sha256(img.tobytes()).hexdigest()[:12], "threads", torch.get_num_threads())
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())
    panoptic(x.float())
    tta(x)


if __name__ == "__main__":
    main()
