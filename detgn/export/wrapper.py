"""A GeneralizedRCNN as a function of one image tensor returning plain tensors, for tracing.

    ExportableModel(model)(image) -> (boxes, scores, classes, mask_probs)

image: (3, H, W) uint8 in cfg.INPUT.FORMAT channel order, already resized by the test-time
    ResizeShortestEdge rule (any H, W: the graph pads to the backbone's size divisibility itself).
boxes: (R, 4) float32 XYXY in input-image pixels (clipped to H, W); scores: (R,) float32;
classes: (R,) int64 in [0, num_classes); mask_probs: (R, M, M) float32 sigmoid probabilities of
    each detection's class (M = 28 for the standard mask head), to be pasted into the image
    (detgn.export.postprocess) like detgn's detector_postprocess does. Without a mask head the
    fourth output is (R, 0, 0).
"""

import torch
from torch import nn
from torch.nn import functional as F

from detgn.structures import ImageList

__all__ = ["ExportableModel", "OUTPUT_NAMES"]

OUTPUT_NAMES = ["boxes", "scores", "classes", "mask_probs"]


class ExportableModel(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    def train(self, mode: bool = True) -> "ExportableModel":
        """Always inference: exporters switch modules to train mode and back; this one stays in eval."""
        return super().train(False)

    def forward(self, image: torch.Tensor):
        m = self.model
        x = (image.float() - m.pixel_mean) / m.pixel_std
        h, w = image.shape[-2], image.shape[-1]  # 0-d tensors while tracing: the graph keeps them symbolic
        s = max(int(m.backbone.size_divisibility), 1)
        pad_h = (h + (s - 1)) // s * s - h
        pad_w = (w + (s - 1)) // s * s - w
        x = F.pad(x, [0, pad_w, 0, pad_h]).unsqueeze(0)
        images = ImageList(x, [(h, w)])
        features = m.backbone(x)
        proposals, _ = m.proposal_generator(images, features, None)
        results, _ = m.roi_heads(images, features, proposals, None)
        r = results[0]
        boxes = r.pred_boxes.tensor
        if r.has("pred_masks"):
            masks = r.pred_masks[:, 0]
        else:
            masks = boxes.new_zeros((boxes.shape[0], 0, 0))
        return boxes, r.scores, r.pred_classes, masks
