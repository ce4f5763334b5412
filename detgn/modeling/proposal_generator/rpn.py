"""Region Proposal Network (RPN) for FPN.

Shapes: N images, L levels, A anchors per location, Hi x Wi level sizes,
Ri = Hi * Wi * A anchors of level i, G ground-truth boxes of an image.
"""

from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from fvcore.common.registry import Registry
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms

from detgn.config import configurable
from detgn.layers import ShapeSpec, cat
from detgn.layers.tracing import is_tracing, topk_size
from detgn.structures import Boxes, ImageList, Instances, pairwise_iou
from detgn.utils.errors import ConfigValueError

from ..anchor_generator import build_anchor_generator
from ..box_regression import Box2BoxTransform, smooth_l1_loss
from ..matcher import Matcher
from ..sampling import subsample_labels
from .build import PROPOSAL_GENERATOR_REGISTRY

__all__ = ["RPN_HEAD_REGISTRY", "StandardRPNHead", "RPN", "build_rpn_head", "find_top_rpn_proposals"]

RPN_HEAD_REGISTRY = Registry("RPN_HEAD")
RPN_HEAD_REGISTRY.__doc__ = """
Registry for RPN heads. A registered class is called as `cls(cfg, input_shape)` with
input_shape a list of ShapeSpec (one per level). Its forward takes L maps (N, C, Hi, Wi)
and returns (objectness logits: L x (N, A, Hi, Wi), deltas: L x (N, A * 4, Hi, Wi)).
"""


def build_rpn_head(cfg, input_shape):
    return RPN_HEAD_REGISTRY.get(cfg.MODEL.RPN.HEAD_NAME)(cfg, input_shape)


@RPN_HEAD_REGISTRY.register()
class StandardRPNHead(nn.Module):
    """Shared 3x3 conv(s) (+ReLU each) then sibling 1x1 convs for objectness (A) and deltas (4A).

    conv_dims (MODEL.RPN.CONV_DIMS): the output channels of each shared conv, -1 meaning the input's. One entry is
    detectron2's classic head (`conv`); several stack that many convs (-1: the previous conv's channels) (`conv.conv0`, `conv.conv1`, ..., detectron2's
    names: its new baselines use [-1, -1])."""

    @configurable
    def __init__(self, *, in_channels: int, num_anchors: int, box_dim: int = 4, conv_dims: List[int] = (-1,)):
        super().__init__()
        widths = []  # -1: the previous conv's channels (the input's for the first), as detectron2
        for d in conv_dims:
            widths.append((widths[-1] if widths else in_channels) if d == -1 else d)
        if not widths or any(w <= 0 for w in widths):
            raise ConfigValueError(f"MODEL.RPN.CONV_DIMS {list(conv_dims)}: each entry is -1 or a channel count >= 1")
        convs = [nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip([in_channels] + widths[:-1], widths)]
        self.conv = (
            convs[0] if len(convs) == 1 else nn.Sequential(OrderedDict((f"conv{k}", c) for k, c in enumerate(convs)))
        )
        out = widths[-1]
        self.objectness_logits = nn.Conv2d(out, num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(out, num_anchors * box_dim, kernel_size=1)
        for layer in convs + [self.objectness_logits, self.anchor_deltas]:
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        in_channels = {s.channels for s in input_shape}
        if len(in_channels) != 1:
            raise ValueError("RPN head needs the same channel count on every level")
        anchor_generator = build_anchor_generator(cfg, input_shape)
        num_anchors = set(anchor_generator.num_anchors)
        if len(num_anchors) != 1:
            raise ValueError("RPN head needs the same number of anchors per location on every level")
        return dict(
            in_channels=in_channels.pop(),
            num_anchors=num_anchors.pop(),
            box_dim=anchor_generator.box_dim,
            conv_dims=cfg.MODEL.RPN.CONV_DIMS,
        )

    def forward(self, features: List[torch.Tensor]):
        logits, deltas = [], []
        convs = list(self.conv) if isinstance(self.conv, nn.Sequential) else [self.conv]
        for x in features:
            t = x
            for conv in convs:
                t = F.relu_(conv(t))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


def find_top_rpn_proposals(
    proposals: List[torch.Tensor],
    pred_objectness_logits: List[torch.Tensor],
    image_sizes: List[Tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
) -> List[Instances]:
    """Per level top-k by logit, clip, drop small/empty, NMS within each level, per-image top-k.

    Args:
        proposals: L tensors (N, Ri, 4) decoded boxes.
        pred_objectness_logits: L tensors (N, Ri).
    Returns:
        N Instances with proposal_boxes and objectness_logits, sorted by logit (descending).
    """
    num_images = len(image_sizes)
    device = proposals[0].device if proposals else torch.device("cpu")
    topk_scores, topk_proposals, level_ids = [], [], []
    batch_idx = torch.arange(num_images, device=device)
    for level_id, (boxes_i, logits_i) in enumerate(zip(proposals, pred_objectness_logits)):
        num_k = topk_size(logits_i, pre_nms_topk, dim=1)
        logits_i, idx = logits_i.topk(num_k, dim=1)
        topk_proposals.append(boxes_i[batch_idx[:, None], idx])
        topk_scores.append(logits_i)
        level_ids.append(torch.full_like(idx[0], level_id))
    topk_scores = cat(topk_scores, dim=1)
    topk_proposals = cat(topk_proposals, dim=1)
    level_ids = cat(level_ids, dim=0)
    results = []
    for n, image_size in enumerate(image_sizes):
        boxes = Boxes(topk_proposals[n])
        scores_per_img = topk_scores[n]
        lvl = level_ids
        valid = torch.isfinite(boxes.tensor).all(dim=1) & torch.isfinite(scores_per_img)
        if is_tracing() or not valid.all():  # a traced graph must keep the filter for every input
            if training:
                raise FloatingPointError("Predicted boxes or scores contain Inf/NaN. Training has diverged.")
            boxes, scores_per_img, lvl = boxes[valid], scores_per_img[valid], lvl[valid]
        boxes.clip(image_size)
        keep = boxes.nonempty(threshold=min_box_size)
        if is_tracing() or not keep.all():
            boxes, scores_per_img, lvl = boxes[keep], scores_per_img[keep], lvl[keep]
        keep = batched_nms(boxes.tensor, scores_per_img, lvl, nms_thresh)
        keep = keep[:post_nms_topk]
        res = Instances(image_size)
        res.proposal_boxes = boxes[keep]
        res.objectness_logits = scores_per_img[keep]
        results.append(res)
    return results


@PROPOSAL_GENERATOR_REGISTRY.register()
class RPN(nn.Module):
    """Region Proposal Network: anchors, head, labelling, losses and proposal selection."""

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        head: nn.Module,
        anchor_generator: nn.Module,
        anchor_matcher: Matcher,
        box2box_transform: Box2BoxTransform,
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_topk: Tuple[int, int],
        post_nms_topk: Tuple[int, int],
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        anchor_boundary_thresh: float = -1.0,
        loss_weight: Dict[str, float] = None,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.box2box_transform = box2box_transform
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_box_size = float(min_box_size)
        self.anchor_boundary_thresh = anchor_boundary_thresh
        self.loss_weight = loss_weight or {"loss_rpn_cls": 1.0, "loss_rpn_loc": 1.0}
        if box_reg_loss_type not in ("smooth_l1", "giou"):
            raise ConfigValueError(f"MODEL.RPN.BBOX_REG_LOSS_TYPE must be smooth_l1 or giou, got '{box_reg_loss_type}'")
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        from detgn.modeling.backbone.backbone import check_in_features

        r = cfg.MODEL.RPN
        in_features = list(r.IN_FEATURES)
        check_in_features("MODEL.RPN.IN_FEATURES", in_features, input_shape, cfg.MODEL.BACKBONE.NAME)
        shapes = [input_shape[f] for f in in_features]
        return dict(
            in_features=in_features,
            head=build_rpn_head(cfg, shapes),
            anchor_generator=build_anchor_generator(cfg, shapes),
            anchor_matcher=Matcher(r.IOU_THRESHOLDS, r.IOU_LABELS, allow_low_quality_matches=True),
            box2box_transform=Box2BoxTransform(weights=r.BBOX_REG_WEIGHTS),
            batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
            positive_fraction=r.POSITIVE_FRACTION,
            pre_nms_topk=(r.PRE_NMS_TOPK_TRAIN, r.PRE_NMS_TOPK_TEST),
            post_nms_topk=(r.POST_NMS_TOPK_TRAIN, r.POST_NMS_TOPK_TEST),
            nms_thresh=r.NMS_THRESH,
            min_box_size=cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
            anchor_boundary_thresh=r.BOUNDARY_THRESH,
            loss_weight={"loss_rpn_cls": r.LOSS_WEIGHT, "loss_rpn_loc": r.BBOX_REG_LOSS_WEIGHT * r.LOSS_WEIGHT},
            box_reg_loss_type=r.BBOX_REG_LOSS_TYPE,
            smooth_l1_beta=r.SMOOTH_L1_BETA,
        )

    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """-> gt_labels: N x (R,) in {-1, 0, 1} after sampling; matched_gt_boxes: N x (R, 4)."""
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for inst in gt_instances:
            gt_boxes = inst.gt_boxes
            iou = pairwise_iou(gt_boxes, anchors)
            matched_idxs, labels = self.anchor_matcher(iou)
            labels = labels.to(device=gt_boxes.device)
            if self.anchor_boundary_thresh >= 0:
                inside = anchors.inside_box(inst.image_size, self.anchor_boundary_thresh)
                labels[~inside] = -1
            pos, neg = subsample_labels(labels, self.batch_size_per_image, self.positive_fraction, 0)
            labels.fill_(-1)
            labels.scatter_(0, pos, 1)
            labels.scatter_(0, neg, 0)
            if len(gt_boxes) == 0:
                matched = torch.zeros_like(anchors.tensor)
            else:
                matched = gt_boxes.tensor[matched_idxs]
            gt_labels.append(labels)
            matched_gt_boxes.append(matched)
        return gt_labels, matched_gt_boxes

    def losses(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        gt_labels: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """Sum of BCE over sampled anchors and L1 over positive deltas, each / (batch_size_per_image * N)."""
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        anchors_t = Boxes.cat(anchors).tensor
        gt_deltas = torch.stack([self.box2box_transform.get_deltas(anchors_t, k) for k in gt_boxes])  # (N, R, 4)
        pos_mask = gt_labels == 1
        pred_deltas = cat(pred_anchor_deltas, dim=1)  # (N, R, 4)
        if self.box_reg_loss_type == "smooth_l1":
            loc = smooth_l1_loss(pred_deltas[pos_mask], gt_deltas[pos_mask], self.smooth_l1_beta, reduction="sum")
        else:
            from torchvision.ops import generalized_box_iou_loss

            pred_boxes = self.box2box_transform.apply_deltas(
                pred_deltas[pos_mask], anchors_t.expand(num_images, -1, -1)[pos_mask]
            )
            loc = generalized_box_iou_loss(pred_boxes, torch.stack(gt_boxes)[pos_mask], reduction="sum")
        valid = gt_labels >= 0
        cls = F.binary_cross_entropy_with_logits(
            cat(pred_objectness_logits, dim=1)[valid], gt_labels[valid].to(torch.float32), reduction="sum"
        )
        normalizer = self.batch_size_per_image * num_images
        losses = {"loss_rpn_cls": cls / normalizer, "loss_rpn_loc": loc / normalizer}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def forward(
        self, images: ImageList, features: Dict[str, torch.Tensor], gt_instances: Optional[List[Instances]] = None
    ):
        features = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(features)
        logits, deltas = self.rpn_head(features)
        # (N, A, Hi, Wi) -> (N, Hi * Wi * A); (N, A * 4, Hi, Wi) -> (N, Hi * Wi * A, 4)
        pred_objectness_logits = [s.permute(0, 2, 3, 1).flatten(1) for s in logits]
        pred_anchor_deltas = [
            x.view(x.shape[0], -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2) for x in deltas
        ]
        if self.training:
            if gt_instances is None:
                raise ValueError("RPN needs gt_instances in training")
            gt_labels, gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
            losses = self.losses(anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        else:
            losses = {}
        proposals = self.predict_proposals(anchors, pred_objectness_logits, pred_anchor_deltas, images.image_sizes)
        return proposals, losses

    @torch.no_grad()
    def predict_proposals(self, anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes):
        """Decode deltas on their anchors and select proposals (no gradient flows to them)."""
        pred_proposals = self._decode_proposals(anchors, pred_anchor_deltas)
        return find_top_rpn_proposals(
            pred_proposals,
            [x.detach().float() for x in pred_objectness_logits],
            image_sizes,
            self.nms_thresh,
            self.pre_nms_topk[self.training],
            self.post_nms_topk[self.training],
            self.min_box_size,
            self.training,
        )

    def _decode_proposals(self, anchors: List[Boxes], pred_anchor_deltas: List[torch.Tensor]):
        n = pred_anchor_deltas[0].shape[0]
        out = []
        for anchors_i, deltas_i in zip(anchors, pred_anchor_deltas):
            b = anchors_i.tensor.size(1)
            deltas_i = deltas_i.detach().reshape(-1, b)
            a = anchors_i.tensor.unsqueeze(0).expand(n, -1, -1).reshape(-1, b)
            out.append(self.box2box_transform.apply_deltas(deltas_i, a).view(n, -1, b))
        return out
