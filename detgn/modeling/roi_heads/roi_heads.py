"""ROI heads: proposal sampling, box head + predictor, mask head (Mask R-CNN with FPN).

Shapes: N images, Ri proposals of image i, R = sum Ri, K foreground classes.
"""

from typing import Dict, List, Optional, Tuple

import torch
from fvcore.common.registry import Registry
from torch import nn

from detgn.config import configurable
from detgn.layers import ShapeSpec
from detgn.structures import Boxes, ImageList, Instances, pairwise_iou
from detgn.utils.events import put_model_stats

from ..matcher import Matcher
from ..poolers import ROIPooler
from ..sampling import subsample_labels
from .box_head import build_box_head
from .fast_rcnn import FastRCNNOutputLayers
from .mask_head import build_mask_head

__all__ = ["ROI_HEADS_REGISTRY", "ROIHeads", "StandardROIHeads", "build_roi_heads", "select_foreground_proposals"]

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = """
Registry for ROI heads. A registered class is called as `cls(cfg, input_shape)` with
input_shape {feature name: ShapeSpec}. Its forward is
`forward(images: ImageList, features: Dict[str, Tensor], proposals: List[Instances],
targets: Optional[List[Instances]])` and returns (detections: List[Instances], losses: dict).
"""


def build_roi_heads(cfg, input_shape):
    return ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME)(cfg, input_shape)


def select_foreground_proposals(
    proposals: List[Instances], bg_label: int
) -> Tuple[List[Instances], List[torch.Tensor]]:
    """Keep proposals whose gt_classes is a foreground class (not -1, not bg_label)."""
    fg_proposals, fg_masks = [], []
    for p in proposals:
        fg = (p.gt_classes != -1) & (p.gt_classes != bg_label)
        fg_proposals.append(p[fg])
        fg_masks.append(fg)
    return fg_proposals, fg_masks


def add_ground_truth_to_proposals(targets: List[Instances], proposals: List[Instances]) -> List[Instances]:
    """Append each image's GT boxes to its proposals, with a logit of a probability near 1."""
    out = []
    for gt, props in zip(targets, proposals):
        device = props.objectness_logits.device
        gt_logit_value = torch.log(torch.tensor((1.0 - 1e-10) / (1 - (1.0 - 1e-10)), device=device))
        gt_props = Instances(props.image_size)
        gt_props.proposal_boxes = gt.gt_boxes.to(device)
        gt_props.objectness_logits = gt_logit_value * torch.ones(len(gt), device=device)
        out.append(Instances.cat([props, gt_props]))
    return out


class ROIHeads(nn.Module):
    """Common part: label proposals against GT and sample the ROIs used in the losses."""

    def __init__(
        self,
        *,
        num_classes: int,
        batch_size_per_image: int,
        positive_fraction: float,
        proposal_matcher: Matcher,
        proposal_append_gt: bool = True,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_matcher = proposal_matcher
        self.proposal_append_gt = proposal_append_gt

    @classmethod
    def from_config(cls, cfg):
        h = cfg.MODEL.ROI_HEADS
        return dict(
            num_classes=h.NUM_CLASSES,
            batch_size_per_image=h.BATCH_SIZE_PER_IMAGE,
            positive_fraction=h.POSITIVE_FRACTION,
            proposal_matcher=Matcher(h.IOU_THRESHOLDS, h.IOU_LABELS, allow_low_quality_matches=False),
            proposal_append_gt=h.PROPOSAL_APPEND_GT,
        )

    def _sample_proposals(self, matched_idxs, matched_labels, gt_classes):
        has_gt = gt_classes.numel() > 0
        if has_gt:
            gt_classes = gt_classes[matched_idxs]
            gt_classes = gt_classes.masked_fill(matched_labels == 0, self.num_classes).masked_fill(
                matched_labels == -1, -1
            )
        else:
            gt_classes = torch.zeros_like(matched_idxs) + self.num_classes
        fg, bg = subsample_labels(gt_classes, self.batch_size_per_image, self.positive_fraction, self.num_classes)
        sampled = torch.cat([fg, bg], dim=0)
        return sampled, gt_classes[sampled]

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: List[Instances], targets: List[Instances]) -> List[Instances]:
        """-> per image the sampled proposals with gt_classes (K = background), gt_boxes, gt_masks."""
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)
        out = []
        num_fg, num_bg = [], []
        for props, tgt in zip(proposals, targets):
            has_gt = len(tgt) > 0
            iou = pairwise_iou(tgt.gt_boxes, props.proposal_boxes)
            matched_idxs, matched_labels = self.proposal_matcher(iou)
            sampled, gt_classes = self._sample_proposals(matched_idxs, matched_labels, tgt.gt_classes)
            props = props[sampled]
            props.gt_classes = gt_classes
            if has_gt:
                sampled_targets = matched_idxs[sampled]
                for name, value in tgt.get_fields().items():
                    if name.startswith("gt_") and not props.has(name):
                        props.set(name, value[sampled_targets])
            else:
                props.gt_boxes = Boxes(props.proposal_boxes.tensor.new_zeros((len(sampled), 4)))
            num_bg.append((gt_classes == self.num_classes).sum())  # stays on the device: read at the trainer's flush
            num_fg.append(len(gt_classes) - num_bg[-1])
            out.append(props)
        n = max(len(num_fg), 1)
        put_model_stats(**{"roi_head/num_fg_samples": sum(num_fg) / n, "roi_head/num_bg_samples": sum(num_bg) / n})
        return out


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(ROIHeads):
    """Box branch (pooler -> box head -> predictor) and mask branch on FPN levels."""

    @configurable
    def __init__(
        self,
        *,
        box_in_features: List[str],
        box_pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: nn.Module,
        mask_in_features: Optional[List[str]] = None,
        mask_pooler: Optional[ROIPooler] = None,
        mask_head: Optional[nn.Module] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_features = self.box_in_features = box_in_features
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_on = mask_in_features is not None
        if self.mask_on:
            self.mask_in_features = mask_in_features
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg)
        ret.update(cls._init_box_head(cfg, input_shape))
        if cfg.MODEL.MASK_ON:
            ret.update(cls._init_mask_head(cfg, input_shape))
        return ret

    @staticmethod
    def _pooled_input(cfg, input_shape: Dict[str, ShapeSpec]):
        """-> (IN_FEATURES, their scales 1/stride, their common channel count)."""
        from detgn.modeling.backbone.backbone import check_in_features

        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        check_in_features("MODEL.ROI_HEADS.IN_FEATURES", in_features, input_shape, cfg.MODEL.BACKBONE.NAME)
        scales = [1.0 / input_shape[k].stride for k in in_features]
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError("ROI heads need the same channel count on all IN_FEATURES")
        return in_features, scales, channels.pop()

    @classmethod
    def _init_box_head(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        in_features, scales, c = cls._pooled_input(cfg, input_shape)
        bh = cfg.MODEL.ROI_BOX_HEAD
        box_pooler = ROIPooler(bh.POOLER_RESOLUTION, scales, bh.POOLER_SAMPLING_RATIO, bh.POOLER_TYPE)
        box_head = build_box_head(cfg, ShapeSpec(channels=c, height=bh.POOLER_RESOLUTION, width=bh.POOLER_RESOLUTION))
        return dict(
            box_in_features=in_features,
            box_pooler=box_pooler,
            box_head=box_head,
            box_predictor=FastRCNNOutputLayers(cfg, box_head.output_shape),
        )

    @classmethod
    def _init_mask_head(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        in_features, scales, c = cls._pooled_input(cfg, input_shape)
        mh = cfg.MODEL.ROI_MASK_HEAD
        return dict(
            mask_in_features=in_features,
            mask_pooler=ROIPooler(mh.POOLER_RESOLUTION, scales, mh.POOLER_SAMPLING_RATIO, mh.POOLER_TYPE),
            mask_head=build_mask_head(
                cfg, ShapeSpec(channels=c, height=mh.POOLER_RESOLUTION, width=mh.POOLER_RESOLUTION)
            ),
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
                raise ValueError("StandardROIHeads needs targets in training")
            proposals = self.label_and_sample_proposals(proposals, targets)
            losses = self._forward_box(features, proposals)
            losses.update(self._forward_mask(features, proposals))
            return proposals, losses
        pred_instances = self._forward_box(features, proposals)
        pred_instances = self.forward_with_given_boxes(features, pred_instances)
        return pred_instances, {}

    def forward_with_given_boxes(
        self, features: Dict[str, torch.Tensor], instances: List[Instances]
    ) -> List[Instances]:
        """Run the mask head on detected boxes (inference)."""
        assert not self.training
        return self._forward_mask(features, instances)

    def _forward_box(self, features, proposals):
        feats = [features[f] for f in self.box_in_features]
        box_features = self.box_pooler(feats, [x.proposal_boxes for x in proposals])
        box_features = self.box_head(box_features)
        predictions = self.box_predictor(box_features)
        del box_features
        if self.training:
            return self.box_predictor.losses(predictions, proposals)
        pred_instances, _ = self.box_predictor.inference(predictions, proposals)
        return pred_instances

    def _forward_mask(self, features, instances):
        if not self.mask_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
            boxes = [x.proposal_boxes for x in instances]
        else:
            boxes = [x.pred_boxes for x in instances]
        feats = [features[f] for f in self.mask_in_features]
        mask_features = self.mask_pooler(feats, boxes)
        return self.mask_head(mask_features, instances)
