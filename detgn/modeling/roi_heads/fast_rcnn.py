"""Box predictor (classification + class-specific regression), its losses and inference.

Shapes: R ROIs over the batch, K foreground classes (background is index K, the last).
"""

from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detgn.config import configurable
from detgn.layers import ShapeSpec, cat
from detgn.layers.nms import batched_nms_topk
from detgn.layers.tracing import is_tracing, split_per_image
from detgn.structures import Boxes, Instances
from detgn.utils.errors import ConfigValueError

from ..box_regression import Box2BoxTransform, smooth_l1_loss

__all__ = ["FastRCNNOutputLayers", "fast_rcnn_inference"]


def fast_rcnn_inference(
    boxes: List[torch.Tensor],
    scores: List[torch.Tensor],
    image_shapes: List[Tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
):
    """Per image: drop background, score > thresh, per-class NMS, keep top-k.

    Args:
        boxes: N tensors (Ri, K * 4) (or (Ri, 4) class-agnostic); scores: N tensors (Ri, K + 1).
    Returns:
        N Instances(pred_boxes, scores, pred_classes), and N tensors of kept ROI indices.
    """
    results = [
        fast_rcnn_inference_single_image(b, s, hw, score_thresh, nms_thresh, topk_per_image)
        for b, s, hw in zip(boxes, scores, image_shapes)
    ]
    return [r[0] for r in results], [r[1] for r in results]


def fast_rcnn_inference_single_image(boxes, scores, image_shape, score_thresh, nms_thresh, topk_per_image):
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if is_tracing() or not valid.all():
        boxes, scores = boxes[valid], scores[valid]
    scores = scores[:, :-1]
    num_bbox_reg_classes = boxes.shape[1] // 4
    boxes = Boxes(boxes.reshape(-1, 4))
    boxes.clip(image_shape)
    boxes = boxes.tensor.view(-1, num_bbox_reg_classes, 4)  # (R, K or 1, 4)
    filter_mask = scores > score_thresh  # (R, K)
    filter_inds = filter_mask.nonzero()  # (n, 2): roi index, class
    if num_bbox_reg_classes == 1:
        boxes = boxes[filter_inds[:, 0], 0]
    else:
        boxes = boxes[filter_mask]
    scores = scores[filter_mask]
    keep = batched_nms_topk(boxes, scores, filter_inds[:, 1], nms_thresh, topk_per_image)
    boxes, scores, filter_inds = boxes[keep], scores[keep], filter_inds[keep]
    result = Instances(image_shape)
    result.pred_boxes = Boxes(boxes)
    result.scores = scores
    result.pred_classes = filter_inds[:, 1]
    return result, filter_inds[:, 0]


class FastRCNNOutputLayers(nn.Module):
    """cls_score: Linear(D, K + 1); bbox_pred: Linear(D, 4K) (or 4 when class-agnostic)."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        box2box_transform: Box2BoxTransform,
        num_classes: int,
        test_score_thresh: float = 0.0,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        cls_agnostic_bbox_reg: bool = False,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        loss_weight: Dict[str, float] = None,
    ):
        super().__init__()
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        num_bbox_reg_classes = 1 if cls_agnostic_bbox_reg else num_classes
        self.bbox_pred = nn.Linear(input_size, num_bbox_reg_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)
        self.box2box_transform = box2box_transform
        self.num_classes = num_classes
        self.smooth_l1_beta = smooth_l1_beta
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        if box_reg_loss_type not in ("smooth_l1", "giou"):
            raise ConfigValueError(
                f"MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE must be smooth_l1 or giou, got '{box_reg_loss_type}'"
            )
        self.box_reg_loss_type = box_reg_loss_type
        self.loss_weight = loss_weight or {"loss_cls": 1.0, "loss_box_reg": 1.0}

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.ROI_BOX_HEAD
        return dict(
            input_shape=input_shape,
            box2box_transform=Box2BoxTransform(weights=h.BBOX_REG_WEIGHTS),
            num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            cls_agnostic_bbox_reg=h.CLS_AGNOSTIC_BBOX_REG,
            smooth_l1_beta=h.SMOOTH_L1_BETA,
            test_score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            test_nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            test_topk_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            box_reg_loss_type=h.BBOX_REG_LOSS_TYPE,
            loss_weight={"loss_cls": 1.0, "loss_box_reg": h.BBOX_REG_LOSS_WEIGHT},
        )

    def forward(self, x: torch.Tensor):
        """(R, D) features -> scores (R, K + 1), proposal deltas (R, 4K)."""
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    def losses(self, predictions, proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        """Softmax CE (mean over ROIs) and L1 over foreground deltas summed / number of ROIs."""
        scores, proposal_deltas = predictions
        gt_classes = cat([p.gt_classes for p in proposals], dim=0) if len(proposals) else torch.empty(0)
        proposal_boxes = (
            cat([p.proposal_boxes.tensor for p in proposals], dim=0) if len(proposals) else torch.empty((0, 4))
        )
        gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0)
        if gt_classes.numel() == 0:
            loss_cls = scores.sum() * 0.0
        else:
            loss_cls = F.cross_entropy(scores, gt_classes, reduction="mean")
        losses = {
            "loss_cls": loss_cls,
            "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas, gt_classes),
        }
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def box_reg_loss(self, proposal_boxes, gt_boxes, pred_deltas, gt_classes):
        box_dim = proposal_boxes.shape[1]
        fg_inds = torch.nonzero((gt_classes >= 0) & (gt_classes < self.num_classes), as_tuple=True)[0]
        if pred_deltas.shape[1] == box_dim:
            fg_pred = pred_deltas[fg_inds]
        else:
            fg_pred = pred_deltas.view(-1, self.num_classes, box_dim)[fg_inds, gt_classes[fg_inds]]
        if self.box_reg_loss_type == "smooth_l1":
            gt_deltas = self.box2box_transform.get_deltas(proposal_boxes[fg_inds], gt_boxes[fg_inds])
            loss = smooth_l1_loss(fg_pred, gt_deltas, self.smooth_l1_beta, reduction="sum")
        else:
            from torchvision.ops import generalized_box_iou_loss

            pred = self.box2box_transform.apply_deltas(fg_pred, proposal_boxes[fg_inds])
            loss = generalized_box_iou_loss(pred, gt_boxes[fg_inds], reduction="sum")
        return loss / max(gt_classes.numel(), 1.0)

    def predict_boxes(self, predictions, proposals: List[Instances]) -> List[torch.Tensor]:
        if not len(proposals):
            return []
        _, proposal_deltas = predictions
        boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        return split_per_image(self.box2box_transform.apply_deltas(proposal_deltas, boxes), [len(p) for p in proposals])

    def predict_probs(self, predictions, proposals: List[Instances]) -> List[torch.Tensor]:
        scores, _ = predictions
        return split_per_image(F.softmax(scores.float(), dim=-1), [len(p) for p in proposals])

    def inference(self, predictions, proposals: List[Instances]):
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        image_shapes = [x.image_size for x in proposals]
        return fast_rcnn_inference(
            boxes, scores, image_shapes, self.test_score_thresh, self.test_nms_thresh, self.test_topk_per_image
        )
