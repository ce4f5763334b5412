from .box_head import ROI_BOX_HEAD_REGISTRY, FastRCNNConvFCHead, build_box_head
from .fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from .mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    MaskRCNNConvUpsampleHead,
    build_mask_head,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from .roi_heads import ROI_HEADS_REGISTRY, ROIHeads, StandardROIHeads, build_roi_heads, select_foreground_proposals
from .cascade_rcnn import CascadeROIHeads  # noqa: E402  (registers itself; needs roi_heads first)
from .res5_roi_heads import Res5ROIHeads  # noqa: E402

__all__ = [k for k in globals() if not k.startswith("_")]
