from .build import META_ARCH_REGISTRY, build_model
from .classifier import ImageNetClassifier
from .rcnn import GeneralizedRCNN

__all__ = [k for k in globals() if not k.startswith("_")]
