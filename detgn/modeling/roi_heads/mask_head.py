"""Mask heads: ROI features (R, C, 14, 14) -> mask logits (R, K, 28, 28), loss and inference.

Shapes: R foreground ROIs, K classes (class-specific channels), M = 28 mask resolution.
"""

from typing import List

import torch
from fvcore.common.registry import Registry
from torch import nn
from torch.nn import functional as F

from detgn.config import configurable
from detgn.layers import Conv2d, ShapeSpec, c2_msra_fill, cat, get_norm, norm_from_cfg, run_checkpointed, ws_setting
from detgn.layers.tracing import split_per_image
from detgn.structures import Instances

__all__ = [
    "ROI_MASK_HEAD_REGISTRY",
    "MaskRCNNConvUpsampleHead",
    "build_mask_head",
    "mask_rcnn_loss",
    "mask_rcnn_inference",
]

ROI_MASK_HEAD_REGISTRY = Registry("ROI_MASK_HEAD")
ROI_MASK_HEAD_REGISTRY.__doc__ = """
Registry for mask heads. A registered class is called as `cls(cfg, input_shape)` with
input_shape a ShapeSpec(channels, height, width) of the pooled ROI features. Its forward is
`forward(x: (R, C, H, W), instances: List[Instances])`; in training it returns
{"loss_mask": ...} (instances carry proposal_boxes, gt_classes, gt_masks), at inference it
sets `pred_masks` (Ri, 1, M, M) probabilities on each Instances and returns them.
"""


def mask_rcnn_loss(pred_mask_logits: torch.Tensor, instances: List[Instances]) -> torch.Tensor:
    """Sigmoid BCE of the GT class's channel against GT masks cropped to the proposal box.

    Args:
        pred_mask_logits: (R, K, M, M) or (R, 1, M, M) for class-agnostic masks.
        instances: per image, the R_i foreground proposals with proposal_boxes, gt_classes, gt_masks.
    Returns:
        scalar mean over R x M x M (0 with a graph when R == 0).
    """
    cls_agnostic = pred_mask_logits.size(1) == 1
    total = pred_mask_logits.size(0)
    m = pred_mask_logits.size(2)
    assert pred_mask_logits.size(2) == pred_mask_logits.size(3), "Mask prediction must be square!"
    gt_classes, gt_masks = [], []
    for inst in instances:
        if len(inst) == 0:
            continue
        if not cls_agnostic:
            gt_classes.append(inst.gt_classes.to(dtype=torch.int64))
        gt_masks.append(inst.gt_masks.crop_and_resize(inst.proposal_boxes.tensor, m).to(device=pred_mask_logits.device))
    if len(gt_masks) == 0:
        return pred_mask_logits.sum() * 0
    gt_masks = cat(gt_masks, dim=0)
    if cls_agnostic:
        logits = pred_mask_logits[:, 0]
    else:
        idx = torch.arange(total, device=pred_mask_logits.device)
        logits = pred_mask_logits[idx, cat(gt_classes, dim=0)]
    return F.binary_cross_entropy_with_logits(logits, gt_masks.to(logits.dtype), reduction="mean")


def mask_rcnn_inference(pred_mask_logits: torch.Tensor, pred_instances: List[Instances]) -> None:
    """Set `pred_masks` (Ri, 1, M, M) sigmoid probabilities of each detection's predicted class."""
    cls_agnostic = pred_mask_logits.size(1) == 1
    if cls_agnostic:
        probs = pred_mask_logits.float().sigmoid()
    else:
        num = pred_mask_logits.shape[0]
        classes = cat([i.pred_classes for i in pred_instances]) if pred_instances else torch.empty(0, dtype=torch.long)
        idx = torch.arange(num, device=classes.device)
        probs = pred_mask_logits[idx, classes][:, None].float().sigmoid()
    for p, inst in zip(split_per_image(probs, [len(i) for i in pred_instances]), pred_instances):
        inst.pred_masks = p


@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNConvUpsampleHead(nn.Sequential):
    """NUM_CONV 3x3 convs (+norm, ReLU) -> 2x2/2 ConvTranspose (+ReLU) -> 1x1 predictor (K channels)."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: List[int],
        conv_norm="",
        ws: bool = False,
        loss_weight: float = 1.0,
        checkpoint: bool = False,
    ):
        """checkpoint: recompute the tower's activations (convs, deconv, predictor) in the backward pass, keeping only
        its input, the pooled ROI features (layers/activation_checkpoint.py)."""
        super().__init__()
        self.checkpoint = bool(checkpoint)
        if len(conv_dims) < 1:
            raise ValueError("conv_dims must list the convs and the deconv (at least one entry)")
        self.loss_weight = loss_weight
        self.conv_norm_relus = []
        cur = input_shape.channels
        for k, dim in enumerate(conv_dims[:-1]):
            conv = Conv2d(
                cur,
                dim,
                kernel_size=3,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, dim),
                activation=nn.ReLU(inplace=True),
                weight_standardization=ws,
            )
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            cur = dim
        self.deconv = nn.ConvTranspose2d(cur, conv_dims[-1], kernel_size=2, stride=2, padding=0)
        self.add_module("deconv_relu", nn.ReLU(inplace=True))
        self.predictor = nn.Conv2d(conv_dims[-1], num_classes, kernel_size=1)
        for layer in self.conv_norm_relus + [self.deconv]:
            c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.ROI_MASK_HEAD
        return dict(
            input_shape=input_shape,
            num_classes=1 if h.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            conv_dims=[h.CONV_DIM] * (h.NUM_CONV + 1),
            conv_norm=norm_from_cfg(h.NORM, cfg),
            ws=ws_setting(cfg.MODEL.WEIGHT_STANDARDIZATION.MASK_HEAD, cfg.MODEL.WEIGHT_STANDARDIZATION.CONVENTION),
            checkpoint="mask_head" in cfg.MODEL.ACTIVATION_CHECKPOINT.PARTS,
        )

    def layers(self, x):
        for layer in self:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor, instances: List[Instances]):
        x = run_checkpointed(self.layers, x, modules=[self]) if self.checkpoint else self.layers(x)
        if self.training:
            return {"loss_mask": mask_rcnn_loss(x, instances) * self.loss_weight}
        mask_rcnn_inference(x, instances)
        return instances


def build_mask_head(cfg, input_shape):
    return ROI_MASK_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASK_HEAD.NAME)(cfg, input_shape)
