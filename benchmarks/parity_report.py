"""The detectron2 parity figures (tests/modeling/test_detectron2_parity.py) as numbers, per thread count.

    python benchmarks/parity_report.py --threads 1 2
    python benchmarks/parity_report.py --threads 2 --cascade   # the Cascade fixture (detectron2_parity_cascade)

Prints, for each thread count: FPN features max |diff| / abs_max per level, proposals (min IoU
of the first 200 with detectron2's, max objectness difference), detections matched, max score
difference, and the lowest mask IoU over matched detections.
"""

import argparse
import os
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from detgn.structures import Boxes, pairwise_iou  # noqa: E402
from detgn.export.verify import match_detections  # noqa: E402
from tests.modeling.test_detectron2_parity import CASCADE_FIXTURE, FIXTURE, _model  # noqa: E402


CASCADE_CONFIG = os.path.join("Misc", "cascade_mask_rcnn_R_50_FPN_3x_gn.yaml")


def report(reference, image, memory_format="contiguous", config=None):
    model = _model(reference, memory_format) if config is None else _model(reference, memory_format, config)
    out = {}
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        out["features"] = {
            p: (features[p][0, ::16] - ref["slice"]).abs().max().item() / ref["abs_max"].item()
            for p, ref in reference["features"].items()
        }
        proposals, _ = model.proposal_generator(images, features, None)
        got = proposals[0].proposal_boxes.tensor[:200]
        out["proposal_min_iou"] = (
            pairwise_iou(Boxes(reference["proposals"]["boxes"]), Boxes(got)).diagonal().min().item()
        )
        out["objectness_max_diff"] = (
            (proposals[0].objectness_logits[:200] - reference["proposals"]["objectness_logits"]).abs().max().item()
        )
        inst = model([{"image": image, "height": 384, "width": 512}])[0]["instances"]
    pairs = match_detections(  # as the test matches them: same class, box IoU > 0.99, greedy in reference order
        {"boxes": reference["boxes"].numpy(), "classes": reference["classes"].numpy()},
        {"boxes": inst.pred_boxes.tensor.numpy(), "classes": inst.pred_classes.numpy()},
    )
    ri, gi = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    out["matched"] = f"{len(pairs)}/{len(reference['boxes'])}"
    out["score_max_diff"] = (reference["scores"][ri] - inst.scores[gi]).abs().max().item()
    ref_masks = mask_util.decode(
        [{"size": reference["masks"]["size"], "counts": c.encode()} for c in reference["masks"]["counts"]]
    )
    ious = []
    for i, j in pairs:
        a, b = ref_masks[:, :, i].astype(bool), inst.pred_masks[j].numpy()
        u = np.logical_or(a, b).sum()
        ious.append(np.logical_and(a, b).sum() / u if u else 1.0)
    out["mask_iou_min"] = float(min(ious))
    out["mask_iou_below_0.99"] = int(sum(v < 0.99 for v in ious))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cascade", action="store_true", help="the Cascade Mask R-CNN fixture instead of Mask R-CNN's")
    args = ap.parse_args()
    fixture = CASCADE_FIXTURE if args.cascade else FIXTURE
    reference = torch.load(os.path.join(fixture, "outputs.pth"), weights_only=True)
    img = cv2.imread(os.path.join(FIXTURE, "image.png"), cv2.IMREAD_COLOR)
    image = torch.from_numpy(img.transpose(2, 0, 1).copy()).float()
    for t in args.threads:
        torch.set_num_threads(t)
        r = report(reference, image, config=CASCADE_CONFIG if args.cascade else None)
        feats = "  ".join(f"{p} {v:.1e}" for p, v in r["features"].items())
        print(f"threads={t}: features {feats}")
        print(
            f"  proposals: min IoU {r['proposal_min_iou']:.5f}, objectness max diff {r['objectness_max_diff']:.1e}; "
            f"detections matched {r['matched']}, score max diff {r['score_max_diff']:.1e}; "
            f"mask IoU min {r['mask_iou_min']:.4f} ({r['mask_iou_below_0.99']} below 0.99)"
        )


if __name__ == "__main__":
    main()
