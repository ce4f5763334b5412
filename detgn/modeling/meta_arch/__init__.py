from .build import META_ARCH_REGISTRY, build_model
from .classifier import ImageNetClassifier
from .rcnn import GeneralizedRCNN
from .panoptic_fpn import PanopticFPN
from .semantic_seg import SEM_SEG_HEADS_REGISTRY, SemSegFPNHead, build_sem_seg_head

__all__ = [k for k in globals() if not k.startswith("_")]
