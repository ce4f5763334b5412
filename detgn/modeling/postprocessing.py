"""Rescale raw detections (and semantic logits) from the network input size to the original image size."""

import torch
from torch.nn import functional as F

from detgn.layers.mask_ops import paste_masks_in_image
from detgn.structures import Instances

__all__ = ["detector_postprocess", "sem_seg_postprocess"]


def detector_postprocess(
    results: Instances, output_height: int, output_width: int, mask_threshold: float = 0.5
) -> Instances:
    """Scale boxes to (output_height, output_width), clip, drop empty boxes, paste masks.

    `results.pred_masks` (R, 1, M, M) probabilities become (R, H, W) bool masks.
    """
    if isinstance(output_width, torch.Tensor):
        output_width, output_height = int(output_width), int(output_height)
    scale_x = output_width / results.image_size[1]
    scale_y = output_height / results.image_size[0]
    out = Instances((output_height, output_width), **results.get_fields())
    boxes = out.pred_boxes if out.has("pred_boxes") else out.proposal_boxes
    boxes.scale(scale_x, scale_y)
    boxes.clip(out.image_size)
    out = out[boxes.nonempty()]
    if out.has("pred_masks"):
        pm = out.pred_masks
        if pm.dim() == 4:  # (R, 1, M, M) probabilities from the mask head
            out.pred_masks = paste_masks_in_image(pm, out.pred_boxes.tensor, out.image_size, threshold=mask_threshold)
    return out


def sem_seg_postprocess(result: torch.Tensor, img_size, output_height: int, output_width: int) -> torch.Tensor:
    """(C, Hp, Wp) logits of a padded batch -> (C, output_height, output_width): the image's own (h, w) = img_size
    region cut out of the padding, then bilinearly resized (align_corners=False) to the output size."""
    result = result[:, : img_size[0], : img_size[1]].expand(1, -1, -1, -1)
    return F.interpolate(result, size=(output_height, output_width), mode="bilinear", align_corners=False)[0]
