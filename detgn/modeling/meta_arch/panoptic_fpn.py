"""PanopticFPN (Kirillov et al., CVPR 2019): GeneralizedRCNN + a semantic segmentation head on the same FPN,
and at inference the two combined into one panoptic segmentation (detectron2's rules and state-dict keys).

Inputs as GeneralizedRCNN's, plus in training "sem_seg": (H, W) long labels per image (stuff classes 1..C-1,
every thing 0, IGNORE_VALUE unlabelled: detectron2's "panoptic_separated" convention). Outputs per image:
"instances", "sem_seg" (C, H, W) logits at the original size, and "panoptic_seg": ((H, W) int32 segment ids,
0 = unlabelled; a list of segment dicts) when MODEL.PANOPTIC_FPN.COMBINE.ENABLED.
"""

from typing import Dict, List

import torch
from torch import nn

from detgn.config import configurable
from detgn.structures import ImageList, Instances
from detgn.utils.errors import UserInputError

from ..postprocessing import detector_postprocess, sem_seg_postprocess
from .build import META_ARCH_REGISTRY
from .rcnn import GeneralizedRCNN
from .semantic_seg import build_sem_seg_head

__all__ = ["PanopticFPN", "combine_semantic_and_instance_outputs", "MissingSemSegError"]


class MissingSemSegError(UserInputError, ValueError):
    """PanopticFPN training inputs without semantic labels."""


@META_ARCH_REGISTRY.register()
class PanopticFPN(GeneralizedRCNN):
    """GeneralizedRCNN with `sem_seg_head`; see the module docstring for inputs and outputs."""

    @configurable
    def __init__(
        self,
        *,
        sem_seg_head: nn.Module,
        combine_on: bool = True,
        combine_overlap_thresh: float = 0.5,
        combine_stuff_area_thresh: float = 4096,
        combine_instances_score_thresh: float = 0.5,
        instance_loss_weight: float = 1.0,
        **kwargs,
    ):
        """combine_on: add "panoptic_seg" at inference; combine_*: the rules of
        combine_semantic_and_instance_outputs (overlap fraction, stuff area in pixels, instance score);
        instance_loss_weight: factor on the ROI heads' losses (box and mask; not the RPN's, as detectron2).
        Other arguments as GeneralizedRCNN's."""
        super().__init__(**kwargs)
        self.sem_seg_head = sem_seg_head
        self.sem_seg_head.to(memory_format=self.memory_format)
        self.combine_on = combine_on
        self.combine_overlap_thresh = combine_overlap_thresh
        self.combine_stuff_area_thresh = combine_stuff_area_thresh
        self.combine_instances_score_thresh = combine_instances_score_thresh
        self.instance_loss_weight = instance_loss_weight

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        combine = cfg.MODEL.PANOPTIC_FPN.COMBINE
        ret.update(
            sem_seg_head=build_sem_seg_head(cfg, ret["backbone"].output_shape()),
            combine_on=combine.ENABLED,
            combine_overlap_thresh=combine.OVERLAP_THRESH,
            combine_stuff_area_thresh=combine.STUFF_AREA_LIMIT,
            combine_instances_score_thresh=combine.INSTANCES_CONFIDENCE_THRESH,
            instance_loss_weight=cfg.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT,
        )
        return ret

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        if "sem_seg" not in batched_inputs[0] or "instances" not in batched_inputs[0]:
            raise MissingSemSegError(
                "PanopticFPN trains on inputs with 'instances' and 'sem_seg' (semantic labels: stuff 1..C-1, things "
                "0); this dataset's mapper gives " + ", ".join(sorted(batched_inputs[0])) + ": use a panoptic dataset"
            )
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt_sem_seg = ImageList.from_tensors(
            [x["sem_seg"].to(self.device) for x in batched_inputs],
            self.backbone.size_divisibility,
            self.sem_seg_head.ignore_value,
        ).tensor
        _, losses = self.sem_seg_head(features, gt_sem_seg)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.instance_loss_weight != 1.0:
            detector_losses = {k: v * self.instance_loss_weight for k, v in detector_losses.items()}
        losses.update(proposal_losses)
        losses.update(detector_losses)
        return losses

    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True):
        """do_postprocess=False: (raw Instances at the input size, (N, C, Hp, Wp) logits of the padded batch)."""
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        sem_seg, _ = self.sem_seg_head(features, None)
        proposals, _ = self.proposal_generator(images, features, None)
        detections, _ = self.roi_heads(images, features, proposals, None)
        if not do_postprocess:
            return detections, sem_seg
        return self.postprocess(detections, sem_seg, batched_inputs, images.image_sizes)

    def postprocess(self, detections: List[Instances], sem_seg: torch.Tensor, batched_inputs, image_sizes):
        """The raw outputs of inference(do_postprocess=False) -> per image {"sem_seg", "instances", "panoptic_seg"}
        at each input's "height" x "width" (`image_sizes`: the network input sizes)."""
        out = []
        for logits, det, inp, size in zip(sem_seg, detections, batched_inputs, image_sizes):
            h, w = inp.get("height", size[0]), inp.get("width", size[1])
            sem = sem_seg_postprocess(logits, size, h, w)
            inst = detector_postprocess(det, h, w)
            out.append({"sem_seg": sem, "instances": inst})
            if self.combine_on:
                out[-1]["panoptic_seg"] = combine_semantic_and_instance_outputs(
                    inst,
                    sem.argmax(dim=0),
                    self.combine_overlap_thresh,
                    self.combine_stuff_area_thresh,
                    self.combine_instances_score_thresh,
                )
        return out


def combine_semantic_and_instance_outputs(
    instances: Instances,
    semantic: torch.Tensor,
    overlap_threshold: float,
    stuff_area_thresh: float,
    instances_score_thresh: float,
):
    """Panoptic segmentation of one image from its detections (pasted (R, H, W) masks) and semantic labels
    ((H, W), 0 = "any thing"), as panopticapi's combine script and detectron2 do it:

    - instances by decreasing score, while score >= instances_score_thresh; one whose mask is empty, or overlaps
      the segments already placed by more than overlap_threshold of its area, is skipped; otherwise its pixels
      not yet taken become a new segment;
    - then each stuff label (> 0) in increasing order: its pixels not yet taken become a segment if they are at
      least stuff_area_thresh pixels.

    Returns ((H, W) int32 segment ids, 0 = unlabelled; [{"id", "isthing", "category_id", and "score" +
    "instance_id" for things or "area" for stuff}] in id order)."""
    panoptic = torch.zeros_like(semantic, dtype=torch.int32)
    order = torch.argsort(-instances.scores)
    segments = []
    masks = instances.pred_masks.to(dtype=torch.bool, device=panoptic.device)
    for i in order:
        score = instances.scores[i].item()
        if score < instances_score_thresh:
            break
        mask = masks[i]
        area = mask.sum().item()
        if area == 0:
            continue
        overlap = (mask & (panoptic > 0)).sum().item()
        if overlap * 1.0 / area > overlap_threshold:
            continue
        if overlap > 0:
            mask = mask & (panoptic == 0)
        panoptic[mask] = len(segments) + 1
        segments.append(
            {
                "id": len(segments) + 1,
                "isthing": True,
                "score": score,
                "category_id": instances.pred_classes[i].item(),
                "instance_id": i.item(),
            }
        )
    for label in torch.unique(semantic).cpu().tolist():
        if label == 0:  # "any thing": covered by the instances
            continue
        mask = (semantic == label) & (panoptic == 0)
        area = mask.sum().item()
        if area < stuff_area_thresh:
            continue
        panoptic[mask] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "isthing": False, "category_id": label, "area": area})
    return panoptic, segments
