"""META_ARCH_REGISTRY and build_model."""

import logging

import torch
from fvcore.common.registry import Registry

__all__ = ["META_ARCH_REGISTRY", "build_model"]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry for meta-architectures (whole models). A registered class is called as
`cls(cfg)`. Its forward takes a list of dataset-mapper dicts ({"image": (C, H, W) uint8,
"instances": Instances, "height", "width"}) and returns a loss dict in training, or a list
of {"instances": Instances} at inference.
"""


def build_model(cfg):
    """Build the whole model from cfg.MODEL.META_ARCHITECTURE and move it to cfg.MODEL.DEVICE."""
    from detgn.config import check_supported

    check_supported(cfg)
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    device = cfg.MODEL.DEVICE
    if device.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("MODEL.DEVICE is %s but CUDA is not available; using cpu", device)
        device = "cpu"
    model.to(torch.device(device))
    if cfg.MODEL.COMPILE.PARTS:
        from detgn.modeling.compile import compile_parts

        compile_parts(model, cfg.MODEL.COMPILE.PARTS, mode=cfg.MODEL.COMPILE.MODE, backend=cfg.MODEL.COMPILE.BACKEND)
    return model
