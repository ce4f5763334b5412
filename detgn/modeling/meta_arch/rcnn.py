"""GeneralizedRCNN: backbone -> proposal generator -> ROI heads, with input normalisation."""

from typing import Dict, List, Optional

import torch
from torch import nn

from detgn.config import configurable
from detgn.structures import ImageList, Instances
from detgn.utils.errors import ConfigValueError

from ..backbone import Backbone, build_backbone
from ..postprocessing import detector_postprocess
from ..proposal_generator import build_proposal_generator
from ..roi_heads import build_roi_heads
from .build import META_ARCH_REGISTRY

__all__ = ["GeneralizedRCNN"]


@META_ARCH_REGISTRY.register()
class GeneralizedRCNN(nn.Module):
    """Faster / Mask R-CNN. Inputs are per-image dicts; see META_ARCH_REGISTRY for the contract."""

    task = "detection"

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module,
        roi_heads: nn.Module,
        pixel_mean: List[float],
        pixel_std: List[float],
        input_format: str = "BGR",
        memory_format: str = "contiguous",
    ):
        """memory_format: "channels_last" keeps images, conv weights and feature maps NHWC (faster
        oneDNN convolutions and GroupNorm on CPU); "contiguous" keeps NCHW. Same outputs either way."""
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        if input_format not in ("BGR", "RGB"):
            raise ConfigValueError(f"INPUT.FORMAT must be BGR or RGB, got '{input_format}'")
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        if self.pixel_mean.shape != self.pixel_std.shape:
            raise ConfigValueError(f"PIXEL_MEAN {pixel_mean} and PIXEL_STD {pixel_std} have different lengths")
        formats = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
        if memory_format not in formats:
            raise ConfigValueError(f"MODEL.MEMORY_FORMAT must be contiguous or channels_last, got '{memory_format}'")
        self.memory_format = formats[memory_format]
        self.to(memory_format=self.memory_format)  # 4-D weights; buffers and 1-D parameters are unaffected

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        return dict(
            backbone=backbone,
            proposal_generator=build_proposal_generator(cfg, backbone.output_shape()),
            roi_heads=build_roi_heads(cfg, backbone.output_shape()),
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            input_format=cfg.INPUT.FORMAT,
            memory_format=cfg.MODEL.MEMORY_FORMAT,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """(x - mean) / std per image, then pad into an ImageList divisible by the backbone's stride."""
        images = [self._move(x["image"]) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        image_list = ImageList.from_tensors(images, self.backbone.size_divisibility)
        if self.memory_format is not torch.contiguous_format:
            image_list.tensor = image_list.tensor.contiguous(memory_format=self.memory_format)
        return image_list

    def _move(self, x):
        return x.to(self.device, non_blocking=True)

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of losses. Inference: list of {"instances": Instances} at original size."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError("Training inputs need an 'instances' field (use the training DatasetMapper)")
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses = {}
        losses.update(proposal_losses)
        losses.update(detector_losses)
        return losses

    def inference(
        self,
        batched_inputs: List[Dict],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        """With do_postprocess=False: raw Instances at the network input size (pred_masks (R, 1, 28, 28))."""
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if detected_instances is None:
            proposals, _ = self.proposal_generator(images, features, None)
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            results = self.roi_heads.forward_with_given_boxes(features, [x.to(self.device) for x in detected_instances])
        if do_postprocess:
            return self._postprocess(results, batched_inputs, images.image_sizes)
        return results

    @staticmethod
    def _postprocess(instances, batched_inputs, image_sizes):
        out = []
        for results, inp, image_size in zip(instances, batched_inputs, image_sizes):
            h = inp.get("height", image_size[0])
            w = inp.get("width", image_size[1])
            out.append({"instances": detector_postprocess(results, h, w)})
        return out
