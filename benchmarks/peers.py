"""Peer models for side-by-side timing: torchvision's Mask R-CNN assembled with detgn's GN architecture.

Architecture matched to configs/GN/mask_rcnn_R_50_FPN_3x_gn.yaml: ResNet-50 with GroupNorm(32)
(stride in the 3x3, as torchvision's ResNet), stem + layer1 frozen, FPN with GN, P6 by max-pool,
RPN with one 3x3 conv and 3 anchors per location, 4conv1fc box head with GN, 4-conv mask
head with GN, 512 ROIs per image, RPN top-k 2000/1000 (train) and 1000/1000 (test), ROIAlign
with sampling_ratio 0 (adaptive, as detectron2). Remaining differences: torchvision's
MultiScaleRoIAlign uses aligned=False, and its RPN applies NMS per level the same way.
"""

import torch
from torch import nn


def _gn(c):
    return nn.GroupNorm(32, c)


def build_torchvision_gn_maskrcnn(
    num_classes: int, min_size: int, max_size: int = 100000, score_thresh: float = 0.05, sampling_ratio: int = 0
):
    """torchvision MaskRCNN (num_classes foreground classes) with GN everywhere; images are not resized
    when their short side already equals min_size."""
    import torchvision
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    body = torchvision.models.resnet50(weights=None, norm_layer=_gn)
    for name, p in body.named_parameters():
        if name.startswith(("conv1", "bn1", "layer1")):
            p.requires_grad_(False)
    backbone = BackboneWithFPN(
        body,
        {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        [256, 512, 1024, 2048],
        256,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=_gn,
    )
    anchor_gen = AnchorGenerator(sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    box_head = FastRCNNConvFCHead((256, 7, 7), [256, 256, 256, 256], [1024], norm_layer=_gn)
    mask_head = MaskRCNNHeads(256, [256, 256, 256, 256], 1, norm_layer=_gn)
    # detectron2/detgn pool with sampling_ratio 0 (adaptive); torchvision's default is 2
    box_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=sampling_ratio)
    mask_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, sampling_ratio=sampling_ratio)
    return MaskRCNN(
        backbone,
        num_classes=num_classes + 1,
        min_size=min_size,
        max_size=max_size,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        rpn_anchor_generator=anchor_gen,
        rpn_head=RPNHead(256, 3),
        rpn_pre_nms_top_n_train=2000,
        rpn_post_nms_top_n_train=1000,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=1000,
        box_roi_pool=box_pool,
        mask_roi_pool=mask_pool,
        box_head=box_head,
        box_batch_size_per_image=512,
        box_score_thresh=score_thresh,
        mask_head=mask_head,
    )


def synthetic_batch(num_images: int, height: int, width: int, num_boxes: int = 8, seed: int = 0, num_classes: int = 80):
    """Random images (uint8, CHW) with `num_boxes` random boxes and box-shaped masks each."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num_images):
        img = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
        xy = torch.rand(num_boxes, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = (torch.rand(num_boxes, 2, generator=g) * 0.25 + 0.05) * torch.tensor([width, height])
        boxes = torch.cat([xy, xy + wh], dim=1).floor()
        masks = torch.zeros(num_boxes, height, width, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[i, y0:y1, x0:x1] = True
        classes = torch.randint(0, num_classes, (num_boxes,), generator=g)
        out.append({"image": img, "boxes": boxes, "masks": masks, "classes": classes})
    return out


def to_detgn_inputs(batch):
    from detgn.structures import BitMasks, Boxes, Instances

    res = []
    for b in batch:
        h, w = b["image"].shape[-2:]
        inst = Instances(
            (h, w), gt_boxes=Boxes(b["boxes"].clone()), gt_classes=b["classes"], gt_masks=BitMasks(b["masks"])
        )
        res.append({"image": b["image"], "instances": inst, "height": h, "width": w})
    return res


def to_torchvision_inputs(batch, device="cpu"):
    images = [b["image"].to(device).float().div(255.0) for b in batch]
    targets = [
        {
            "boxes": b["boxes"].to(device),
            "labels": (b["classes"] + 1).to(device),
            "masks": b["masks"].to(device).to(torch.uint8),
        }
        for b in batch
    ]
    return images, targets
