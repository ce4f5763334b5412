"""Cascade R-CNN ROI heads (Cai & Vasconcelos, CVPR 2018) with detectron2's semantics and key names.

S stages (MODEL.ROI_BOX_CASCADE_HEAD.IOUS, one IoU threshold and one set of BBOX_REG_WEIGHTS per stage)
share one box pooler; each stage has its own box head (`roi_heads.box_head.{k}`) and predictor
(`roi_heads.box_predictor.{k}`) with class-agnostic box regression. Stage k > 0 takes the boxes
regressed by stage k - 1 (detached, clipped to the image) as its proposals.

Training: stage 0 labels and samples the RPN proposals as StandardROIHeads does; stage k > 0 labels
*every* box of the previous stage against the ground truth with its own IoU threshold (no sampling),
dropping empty boxes. The pooled features of every stage pass through a gradient scale of 1/S, which
equals averaging the stage losses for the backbone while each head keeps its full gradient. Losses are
named `loss_cls_stage{k}`, `loss_box_reg_stage{k}`.

Inference: every stage's class probabilities are averaged (all stages score the same boxes, so empty
boxes are kept) and the last stage's regressed boxes are kept by score threshold and per-class NMS; the
mask head then runs on those final boxes.

Config: this module owns its keys. `add_cascade_config` adds MODEL.ROI_BOX_CASCADE_HEAD.* with their defaults,
and its decorator registers their rules and relations (config/components.py), so a new component is one module
like this one: its code in a registry, its keys, defaults and checks beside it.

Shapes: N images, Ri boxes of image i, K foreground classes (background is index K).
"""

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from detgn.config import configurable
from detgn.config.components import config_function
from detgn.config.config import CfgNode as CN
from detgn.config.rules import between, gt, seq, seq_of_seq
from detgn.layers import ShapeSpec
from detgn.structures import Boxes, ImageList, Instances, pairwise_iou
from detgn.utils.events import put_model_stats

from ..box_regression import Box2BoxTransform
from ..matcher import Matcher
from ..poolers import ROIPooler
from .box_head import build_box_head
from .fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from .roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads

__all__ = ["CascadeROIHeads", "add_cascade_config"]


def _one_weight_set_per_stage(c):
    """BBOX_REG_WEIGHTS: one (wx, wy, ww, wh) per stage of IOUS."""
    ch = c.MODEL.ROI_BOX_CASCADE_HEAD
    if len(ch.BBOX_REG_WEIGHTS) == len(ch.IOUS) and all(len(w) == 4 for w in ch.BBOX_REG_WEIGHTS):
        return None
    return (
        "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS",
        ch.BBOX_REG_WEIGHTS,
        f"{len(ch.IOUS)} lists (wx, wy, ww, wh), one per MODEL.ROI_BOX_CASCADE_HEAD.IOUS",
    )


def _agnostic_and_first_threshold(c):
    """CascadeROIHeads regresses boxes class-agnostically; stage 0 samples the RPN proposals with the ROI heads'
    threshold, so IOUS[0] is that threshold."""
    if c.MODEL.ROI_HEADS.NAME != "CascadeROIHeads":
        return None
    if (
        c.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG
        and c.MODEL.ROI_BOX_CASCADE_HEAD.IOUS[0] == (c.MODEL.ROI_HEADS.IOU_THRESHOLDS[0])
    ):
        return None
    return (
        "MODEL.ROI_HEADS.NAME",
        c.MODEL.ROI_HEADS.NAME,
        "used with MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True and MODEL.ROI_BOX_CASCADE_HEAD.IOUS[0] == "
        "MODEL.ROI_HEADS.IOU_THRESHOLDS[0]",
    )


@config_function(
    rules={
        "MODEL.ROI_BOX_CASCADE_HEAD.IOUS": seq(between(0.0, 1.0)),
        "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS": seq_of_seq(gt(0)),
    },
    relations=[
        ("Cascade: one set of 4 box-regression weights per stage", _one_weight_set_per_stage),
        (
            "Cascade heads regress boxes class-agnostically, stage 0 with the ROI heads' threshold",
            _agnostic_and_first_threshold,
        ),
    ],
)
def add_cascade_config(cfg) -> None:
    """MODEL.ROI_BOX_CASCADE_HEAD.*, detectron2's keys and defaults (three stages)."""
    c = cfg.MODEL.ROI_BOX_CASCADE_HEAD = CN()  # CascadeROIHeads: one entry per stage
    c.IOUS = (0.5, 0.6, 0.7)  # foreground IoU threshold of each stage
    c.BBOX_REG_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))  # per stage


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `scale`."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * ctx.scale, None


@ROI_HEADS_REGISTRY.register()
class CascadeROIHeads(StandardROIHeads):
    """StandardROIHeads with S box stages; `box_head` and `box_predictor` are ModuleLists of length S."""

    @configurable
    def __init__(
        self,
        *,
        box_in_features: List[str],
        box_pooler: ROIPooler,
        box_heads: Sequence[nn.Module],
        box_predictors: Sequence[nn.Module],
        proposal_matchers: Sequence[Matcher],
        **kwargs,
    ):
        if "proposal_matcher" in kwargs:
            raise TypeError("CascadeROIHeads takes one matcher per stage (proposal_matchers=), not proposal_matcher=")
        if not (len(box_heads) == len(box_predictors) == len(proposal_matchers) >= 1):
            raise ValueError(
                f"CascadeROIHeads needs as many box heads ({len(box_heads)}), predictors ({len(box_predictors)}) "
                f"and matchers ({len(proposal_matchers)}) as stages, at least one"
            )
        super().__init__(
            box_in_features=box_in_features,
            box_pooler=box_pooler,
            box_head=nn.ModuleList(box_heads),
            box_predictor=nn.ModuleList(box_predictors),
            proposal_matcher=proposal_matchers[0],
            **kwargs,
        )
        self.num_cascade_stages = len(box_heads)
        self.proposal_matchers = list(proposal_matchers)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret.pop("proposal_matcher")
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        in_features, scales, c = cls._pooled_input(cfg, input_shape)
        bh = cfg.MODEL.ROI_BOX_HEAD
        ious = list(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS)
        reg_weights = [tuple(w) for w in cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS]
        # their counts, the class-agnostic regression and IOUS[0]: checked by the rules above (check_config)
        pooled = ShapeSpec(channels=c, height=bh.POOLER_RESOLUTION, width=bh.POOLER_RESOLUTION)
        heads, predictors, matchers = [], [], []
        for iou, weights in zip(ious, reg_weights):
            head = build_box_head(cfg, pooled)
            heads.append(head)
            predictors.append(
                FastRCNNOutputLayers(cfg, head.output_shape, box2box_transform=Box2BoxTransform(weights=weights))
            )
            matchers.append(Matcher([iou], [0, 1], allow_low_quality_matches=False))
        return dict(
            box_in_features=in_features,
            box_pooler=ROIPooler(bh.POOLER_RESOLUTION, scales, bh.POOLER_SAMPLING_RATIO, bh.POOLER_TYPE),
            box_heads=heads,
            box_predictors=predictors,
            proposal_matchers=matchers,
        )

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        if self.training:
            if targets is None:
                raise ValueError("CascadeROIHeads needs targets in training")
            proposals = self.label_and_sample_proposals(proposals, targets)
            losses = self._forward_box(features, proposals, targets)
            losses.update(self._forward_mask(features, proposals))
            return proposals, losses
        pred_instances = self._forward_box(features, proposals)
        return self.forward_with_given_boxes(features, pred_instances), {}

    def _forward_box(self, features, proposals, targets=None):
        feats = [features[f] for f in self.box_in_features]
        image_sizes = [x.image_size for x in proposals]
        outputs = []  # (predictions, proposals) of each stage
        prev_boxes = None
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._proposals_from_boxes(prev_boxes, image_sizes)
                if self.training:
                    proposals = self._match_and_label_boxes(proposals, k, targets)
            predictions = self._run_stage(feats, proposals, k)
            prev_boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            outputs.append((predictions, proposals))
        if self.training:
            losses = {}
            for k, (predictions, props) in enumerate(outputs):
                losses.update(
                    {f"{name}_stage{k}": v for name, v in self.box_predictor[k].losses(predictions, props).items()}
                )
            return losses
        per_stage = [self.box_predictor[k].predict_probs(p, props) for k, (p, props) in enumerate(outputs)]
        scores = [sum(stage_scores) * (1.0 / self.num_cascade_stages) for stage_scores in zip(*per_stage)]
        last = self.box_predictor[-1]
        predictions, props = outputs[-1]
        pred_instances, _ = fast_rcnn_inference(
            last.predict_boxes(predictions, props),
            scores,
            image_sizes,
            last.test_score_thresh,
            last.test_nms_thresh,
            last.test_topk_per_image,
        )
        return pred_instances

    def _run_stage(self, feats: List[torch.Tensor], proposals: List[Instances], stage: int):
        box_features = self.box_pooler(feats, [x.proposal_boxes for x in proposals])
        if self.training:
            box_features = _ScaleGradient.apply(box_features, 1.0 / self.num_cascade_stages)
        return self.box_predictor[stage](self.box_head[stage](box_features))

    def _proposals_from_boxes(self, boxes: List[torch.Tensor], image_sizes) -> List[Instances]:
        """Per image (Ri, 4) regressed boxes -> Instances(proposal_boxes), detached and clipped; empty boxes
        are dropped in training only (at inference every stage must score the same boxes)."""
        out = []
        for b, size in zip(boxes, image_sizes):
            b = Boxes(b.detach())
            b.clip(size)
            if self.training:
                b = b[b.nonempty()]
            prop = Instances(size)
            prop.proposal_boxes = b
            out.append(prop)
        return out

    @torch.no_grad()
    def _match_and_label_boxes(
        self, proposals: List[Instances], stage: int, targets: List[Instances]
    ) -> List[Instances]:
        """Label every box with the stage's matcher: gt_classes (K when below the stage IoU), gt_boxes."""
        num_fg, num_bg = [], []
        for props, tgt in zip(proposals, targets):
            matched_idxs, labels = self.proposal_matchers[stage](pairwise_iou(tgt.gt_boxes, props.proposal_boxes))
            if len(tgt) > 0:
                gt_classes = tgt.gt_classes[matched_idxs].masked_fill(labels == 0, self.num_classes)
                gt_boxes = tgt.gt_boxes[matched_idxs]
            else:
                gt_classes = torch.zeros_like(matched_idxs) + self.num_classes
                gt_boxes = Boxes(tgt.gt_boxes.tensor.new_zeros((len(props), 4)))
            props.gt_classes = gt_classes
            props.gt_boxes = gt_boxes
            num_fg.append((labels == 1).sum())  # stays on the device: read at the trainer's flush
            num_bg.append(labels.numel() - num_fg[-1])
        n = max(len(num_fg), 1)
        put_model_stats(
            **{
                f"stage{stage}/roi_head/num_fg_samples": sum(num_fg) / n,
                f"stage{stage}/roi_head/num_bg_samples": sum(num_bg) / n,
            }
        )
        return proposals
