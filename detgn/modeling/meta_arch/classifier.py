"""ImageNetClassifier: detgn's ResNet backbone + global average pooling + a linear layer.

The backbone is built by the detector's own builder (MODEL.RESNETS.*) and registered under the
detector's names (`backbone.bottom_up.*`), so a classifier checkpoint loads into GeneralizedRCNN
with every backbone tensor matched and only `fc.*` unused. Input normalisation is the detector's
(INPUT.FORMAT, MODEL.PIXEL_MEAN / PIXEL_STD), so fine-tuning sees the pixels pretraining saw.
"""

from typing import Dict, List, Union

import torch
import torch.nn.functional as F
from torch import nn

from detgn.config import configurable
from detgn.layers import ShapeSpec
from detgn.utils.errors import ConfigValueError

from ..backbone import BasicBlock, BottleneckBlock, build_resnet_backbone
from .build import META_ARCH_REGISTRY

__all__ = ["ImageNetClassifier", "zero_init_last_norm"]


class _BackboneNames(nn.Module):
    """Holds the ResNet as `bottom_up`, the detector's name for it under `backbone`."""

    def __init__(self, bottom_up: nn.Module):
        super().__init__()
        self.bottom_up = bottom_up


def zero_init_last_norm(resnet: nn.Module) -> int:
    """Set gamma of the last norm of every residual block to 0 (each block starts as the identity, as in
    the GN paper's ImageNet recipe); returns how many were set. Norms without an affine weight are skipped."""
    n = 0
    for block in resnet.modules():
        last = (
            block.conv3
            if isinstance(block, BottleneckBlock)
            else block.conv2
            if isinstance(block, BasicBlock)
            else None
        )
        norm = getattr(last, "norm", None)
        if norm is not None and getattr(norm, "weight", None) is not None:
            with torch.no_grad():
                norm.weight.zero_()
            n += 1
    return n


@META_ARCH_REGISTRY.register()
class ImageNetClassifier(nn.Module):
    """Training: list of {"image": (3, H, W) uint8 in INPUT.FORMAT, "label": int} -> {"loss_cls": cross entropy}.
    Inference: the same list (labels ignored) -> (N, NUM_CLASSES) float logits. All images of a batch have one size."""

    task = "classification"  # META_ARCH_REGISTRY's contract for this forward

    @configurable
    def __init__(
        self,
        *,
        bottom_up: nn.Module,
        num_classes: int,
        pixel_mean: List[float],
        pixel_std: List[float],
        zero_init_residual: bool = True,
    ):
        super().__init__()
        if num_classes < 1:
            raise ConfigValueError(
                f"CLASSIFIER.NUM_CLASSES must be >= 1 to build the classifier, got {num_classes} "
                "(tools/train_classifier.py takes it from the class folders; elsewhere set it, e.g. 1000)"
            )
        self.backbone = _BackboneNames(bottom_up)
        channels = bottom_up.output_shape()["res5"].channels
        self.fc = nn.Linear(channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        self.num_zero_init = zero_init_last_norm(bottom_up) if zero_init_residual else 0
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), persistent=False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg):
        if "CLASSIFIER" not in cfg:
            raise ConfigValueError(
                "MODEL.META_ARCHITECTURE ImageNetClassifier reads the CLASSIFIER.* keys, which this config lacks: "
                "build it from detgn.config.get_classifier_cfg() (tools/train_classifier.py does)"
            )
        c = cfg.clone()
        c.defrost()
        c.MODEL.RESNETS.OUT_FEATURES = ["res5"]
        return dict(
            bottom_up=build_resnet_backbone(c, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))),
            num_classes=cfg.CLASSIFIER.NUM_CLASSES,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            zero_init_residual=cfg.CLASSIFIER.ZERO_INIT_RESIDUAL,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict]) -> Union[Dict[str, torch.Tensor], torch.Tensor]:
        images = torch.stack([d["image"] for d in batched_inputs]).to(self.device, non_blocking=True)
        x = (images.float() - self.pixel_mean) / self.pixel_std
        feature = self.backbone.bottom_up(x)["res5"]
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(feature, 1), 1))
        if not self.training:
            return logits
        labels = torch.as_tensor([int(d["label"]) for d in batched_inputs], device=logits.device)
        return {"loss_cls": F.cross_entropy(logits.float(), labels)}
