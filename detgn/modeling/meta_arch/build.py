"""META_ARCH_REGISTRY and build_model."""

import logging

import torch
from fvcore.common.registry import Registry

__all__ = ["META_ARCH_REGISTRY", "build_model"]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry for meta-architectures (whole models). A registered class is called as `cls(cfg)` and
says by its class attribute `task` (absent: "detection", as detectron2's) which contract its forward
keeps:

- "detection" (GeneralizedRCNN): a list of DatasetMapper dicts ({"image": (C, H, W) uint8,
  "instances": Instances, "height", "width"}) -> a loss dict in training, a list of
  {"instances": Instances} at inference (what the evaluators and the predictor read);
- "classification" (ImageNetClassifier): a list of ClassificationMapper dicts ({"image":
  (3, H, W) uint8, "label": int}) -> a loss dict in training, (N, classes) logits at inference.

The trainer and the checkpointer work with either; evaluation, the predictor and export take detectors.
"""


def build_model(cfg):
    """Build the whole model from cfg.MODEL.META_ARCHITECTURE and move it to cfg.MODEL.DEVICE. The config is
    checked first (its unsupported keys and every rule: config/rules.py), so the builders need not repeat those
    checks, whether the config came through a tool or straight from Python."""
    from detgn.config import check_supported
    from detgn.config.rules import check_config

    check_supported(cfg)
    check_config(cfg)
    cls = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    if getattr(cls, "task", "detection") not in ("detection", "classification"):
        raise TypeError(
            f"META_ARCH_REGISTRY entry {cfg.MODEL.META_ARCHITECTURE} has task = {cls.task!r}; it must be "
            f'"detection" or "classification" (the contract its forward keeps; see META_ARCH_REGISTRY)'
        )
    model = cls(cfg)
    device = cfg.MODEL.DEVICE
    if device.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("MODEL.DEVICE is %s but CUDA is not available; using cpu", device)
        device = "cpu"
    model.to(torch.device(device))
    if cfg.MODEL.COMPILE.PARTS:
        from detgn.modeling.compile import compile_parts

        compile_parts(model, cfg.MODEL.COMPILE.PARTS, mode=cfg.MODEL.COMPILE.MODE, backend=cfg.MODEL.COMPILE.BACKEND)
    return model
