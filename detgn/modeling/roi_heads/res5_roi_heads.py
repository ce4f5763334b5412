"""C4 ROI heads (detectron2's Res5ROIHeads): ResNet's res5 stage run per ROI, shared by boxes and masks.

The model of the GN paper's COCO table (ResNet-50 C4 with GN in the backbone and in this head): the
backbone stops at res4 (stride 16), the RPN runs on res4, every ROI is pooled from res4 at
POOLER_RESOLUTION (14) and goes through res5 (3 bottlenecks, the first with stride 2: 7x7, 2048
channels, MODEL.RESNETS' norm, groups and stride placement). Boxes are predicted from the spatial mean;
the mask head (NUM_CONV 0: deconvolution + predictor) runs on the res5 output itself. Keys:
`roi_heads.res5.{0,1,2}.*`, `roi_heads.box_predictor.*`, `roi_heads.mask_head.*` (detectron2's).

Shapes: N images, R ROIs, K foreground classes.
"""

from typing import Dict, List, Optional

import torch
from torch import nn

from detgn.config import configurable
from detgn.config.rules import register_rules
from detgn.layers import ShapeSpec, norm_from_cfg, ws_setting
from detgn.structures import ImageList, Instances
from detgn.utils.errors import ConfigValueError

from ..backbone.resnet import BottleneckBlock, ResNet
from ..poolers import ROIPooler
from .fast_rcnn import FastRCNNOutputLayers
from .mask_head import build_mask_head
from .roi_heads import ROI_HEADS_REGISTRY, ROIHeads, select_foreground_proposals

__all__ = ["Res5ROIHeads"]


def _one_feature_map(c):
    """Res5ROIHeads pools from one feature map (['res4'] in C4 models)."""
    features = list(c.MODEL.ROI_HEADS.IN_FEATURES)
    if c.MODEL.ROI_HEADS.NAME != "Res5ROIHeads" or len(features) == 1:
        return None
    return ("MODEL.ROI_HEADS.IN_FEATURES", features, "one feature map with Res5ROIHeads (['res4'] in C4 models)")


def _plain_res5(c):
    """Res5ROIHeads' res5 is the box head, built with plain bottlenecks (as in detectron2)."""
    deform = list(c.MODEL.RESNETS.DEFORM_ON_PER_STAGE)
    if c.MODEL.ROI_HEADS.NAME != "Res5ROIHeads" or not deform[-1]:
        return None
    return (
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
        deform,
        "False for res5 with Res5ROIHeads (its res5 is the ROI head, built with plain bottlenecks as in detectron2)",
    )


# the C4 heads' relations, kept with them (their keys are the standard ROI heads' ones, defaults.py)
register_rules(
    {},
    [
        ("C4 (Res5ROIHeads): one input feature map", _one_feature_map),
        ("C4 (Res5ROIHeads): no deformable res5", _plain_res5),
    ],
    owner=__name__,
)


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeads(ROIHeads):
    """pooler (one feature map) -> res5 -> mean -> box predictor; masks from the same res5 features."""

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        pooler: ROIPooler,
        res5: nn.Module,
        box_predictor: nn.Module,
        mask_head: Optional[nn.Module] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_features = in_features
        self.pooler = pooler
        self.res5 = res5
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_head = mask_head

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg)
        from detgn.modeling.backbone.backbone import check_in_features

        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)  # one map, no deformable res5: the relations above
        check_in_features("MODEL.ROI_HEADS.IN_FEATURES", in_features, input_shape, cfg.MODEL.BACKBONE.NAME)
        r, bh = cfg.MODEL.RESNETS, cfg.MODEL.ROI_BOX_HEAD
        factor = 2**3  # res5 is 8x res2
        out_channels = r.RES2_OUT_CHANNELS * factor
        if input_shape[in_features[0]].channels != out_channels // 2:
            raise ConfigValueError(
                f"Res5ROIHeads expects {out_channels // 2} channels on {in_features[0]} "
                f"(MODEL.RESNETS.RES2_OUT_CHANNELS x 4), got {input_shape[in_features[0]].channels}"
            )
        blocks = ResNet.make_stage(
            BottleneckBlock,
            3,
            in_channels=out_channels // 2,
            out_channels=out_channels,
            first_stride=2,
            bottleneck_channels=r.NUM_GROUPS * r.WIDTH_PER_GROUP * factor,
            num_groups=r.NUM_GROUPS,
            norm=norm_from_cfg(r.NORM, cfg),
            stride_in_1x1=r.STRIDE_IN_1X1,
            ws=ws_setting(cfg.MODEL.WEIGHT_STANDARDIZATION.BACKBONE, cfg.MODEL.WEIGHT_STANDARDIZATION.CONVENTION),
        )
        ret.update(
            in_features=in_features,
            pooler=ROIPooler(
                bh.POOLER_RESOLUTION,
                [1.0 / input_shape[in_features[0]].stride],
                bh.POOLER_SAMPLING_RATIO,
                bh.POOLER_TYPE,
            ),
            res5=nn.Sequential(*blocks),
            box_predictor=FastRCNNOutputLayers(cfg, ShapeSpec(channels=out_channels, height=1, width=1)),
        )
        if cfg.MODEL.MASK_ON:
            ret["mask_head"] = build_mask_head(
                cfg, ShapeSpec(channels=out_channels, height=bh.POOLER_RESOLUTION, width=bh.POOLER_RESOLUTION)
            )
        return ret

    def _shared_roi_transform(self, features: List[torch.Tensor], boxes) -> torch.Tensor:
        """(R, C, P, P) pooled from res4 -> (R, 2048, P / 2, P / 2)."""
        return self.res5(self.pooler(features, boxes))

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        if self.training:
            if targets is None:
                raise ValueError("Res5ROIHeads needs targets in training")
            proposals = self.label_and_sample_proposals(proposals, targets)
        feats = [features[f] for f in self.in_features]
        box_features = self._shared_roi_transform(feats, [x.proposal_boxes for x in proposals])
        predictions = self.box_predictor(box_features.mean(dim=[2, 3]))
        if self.training:
            losses = self.box_predictor.losses(predictions, proposals)
            if self.mask_on:
                fg_proposals, fg_masks = select_foreground_proposals(proposals, self.num_classes)
                losses.update(self.mask_head(box_features[torch.cat(fg_masks, dim=0)], fg_proposals))
            return proposals, losses
        pred_instances, _ = self.box_predictor.inference(predictions, proposals)
        return self.forward_with_given_boxes(features, pred_instances), {}

    def forward_with_given_boxes(
        self, features: Dict[str, torch.Tensor], instances: List[Instances]
    ) -> List[Instances]:
        """Masks of detected boxes (inference): res5 features of the final boxes."""
        assert not self.training
        if not self.mask_on:
            return instances
        x = self._shared_roi_transform([features[f] for f in self.in_features], [x.pred_boxes for x in instances])
        return self.mask_head(x, instances)
